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
    from train.allocator import keep_freed_memory

    keep_freed_memory()  # before TensorFlow starts its threads (train/allocator.py)
    if cfg.training.deterministic:
        from train.reproducible import pin_numerics_environment

        pin_numerics_environment()  # read once, when TensorFlow loads: before train.run imports it
    if not args.verbose:
        quiet_environment()
        divert_native_stderr(cfg.run_dir / "native.log")
    from train.run import train

    summary = train(cfg)
    print(summary.describe())
    return 0
