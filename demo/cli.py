"""`trapcam demo`, registered with the trap's CLI through the `trapcam.commands` entry point."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from demo.options import DemoOptions
from edge.errors import TrapcamError
from edge.native_log import diverted_to, quiet_environment
from train.allocator import keep_freed_memory
from train.reproducible import pin_numerics_environment


class MissingExtraError(TrapcamError):
    """The demo needs the training and conversion parts (TensorFlow), which are not installed."""


def register(sub: argparse._SubParsersAction) -> None:
    defaults = DemoOptions()
    p = sub.add_parser(
        "demo",
        help="the whole chain on synthetic data: train, convert, a night through the device loop, "
        "exports, plots, counts against ground truth",
    )
    p.add_argument("--out", default=str(defaults.out), help="folder for everything (default: %(default)s)")
    p.add_argument("--broker", help="also publish over MQTT to HOST or HOST:PORT")
    p.add_argument("--seed", type=int, default=defaults.seed, help="synthetic night and training seed")
    p.add_argument("--frames", type=int, default=defaults.frames, help="frames in the night (5 s apart)")
    p.add_argument("--insects", type=int, default=defaults.insects, help="insect visits in the night")
    p.add_argument(
        "--species",
        help="comma-separated synthetic species for the model and the night (default: all 11)",
    )
    p.add_argument("--per-class", type=int, default=defaults.per_class, help="training crops per species")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    p.add_argument(
        "--budget",
        type=float,
        default=defaults.budget_pp,
        help="int8 check: largest accuracy drop in percentage points (default: %(default)s)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=defaults.min_agreement,
        help="int8 check: least top-1 agreement with the trained model (default: %(default)s)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's, absl's and the converter's log lines (else written to OUT/native.log)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    options = DemoOptions(
        out=Path(args.out),
        seed=args.seed,
        frames=args.frames,
        insects=args.insects,
        per_class=args.per_class,
        epochs=args.epochs,
        broker=args.broker,
        budget_pp=args.budget,
        min_agreement=args.min_agreement,
        verbose=args.verbose,
        species=tuple(n.strip() for n in args.species.split(",") if n.strip()) if args.species else None,
    )
    options.check()
    missing = [name for name in ("keras", "tensorflow", "rich") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"trapcam demo trains and converts a model and needs {', '.join(missing)}: "
            "pip install 'trapcam[demo]'"
        )
    # Before TensorFlow loads: the same float kernels on every x86 CPU, no C++ start-up chatter, and
    # freed memory kept rather than faulted in again at every training step (train/allocator.py).
    pin_numerics_environment()
    keep_freed_memory()
    if not options.verbose:
        quiet_environment()
    from demo.run import run_demo

    try:
        run_demo(options)
    except TrapcamError:
        log = diverted_to()
        if log is not None and log.is_file() and log.stat().st_size:
            print(f"trapcam: TensorFlow's own log lines are in {log}", file=sys.stderr)
        raise
    return 0
