"""`trapcam train`: registered with the trap's CLI through the `trapcam.commands` entry point."""

from __future__ import annotations

import argparse
import importlib.util

from edge.errors import TrapcamError
from edge.native_log import divert_native_stderr, quiet_environment


class MissingExtraError(TrapcamError):
    """The training dependencies (Keras, TensorFlow) are not installed."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an insect classifier (desktop/GPU; needs trapcam[train])")
    p.add_argument("--config", required=True, help="training YAML file")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run RUN_DIR holds (killed, or finished: then only its evaluation runs again); "
        "refused when the data or the config changed. Without it a RUN_DIR that holds a run is refused",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's own log lines (else written to RUN_DIR/native.log)",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("keras") is None:
        raise MissingExtraError("trapcam train needs Keras: pip install 'trapcam[train]'")
    from train.config import load_train_config

    cfg = load_train_config(args.config)  # a bad file fails before Keras and TensorFlow load
    from train.run_folder import check_run_folder

    state = check_run_folder(cfg, args.resume)  # so does a folder that holds another run
    if state.kind == "empty":
        action = f"new run ({state.detail})" if state.detail else "new run"
    else:
        action = f"resuming {state.describe()}"
    weights = cfg.model.weights_origin()
    print(f"trapcam train: {action} in {cfg.run_dir}; starting weights: {weights}", flush=True)
    from train.allocator import keep_freed_memory

    keep_freed_memory()  # before TensorFlow starts its threads (train/allocator.py)
    if cfg.training.deterministic:
        from train.reproducible import pin_numerics_environment

        pin_numerics_environment()  # read once, when TensorFlow loads: before train.run imports it
    if not args.verbose:
        quiet_environment()
        divert_native_stderr(cfg.run_dir / "native.log")
    from train.run import train

    summary = train(cfg, resume=args.resume)
    print(summary.describe())
    return 0
