"""Reproducible training on the CPU: the same seed gives the same model on every x86 machine.

Float training on the CPU differs from machine to machine for three reasons, each removed here:
- oneDNN picks its kernels at run time by the CPU's instruction set (AVX2, AVX-512, AMX), and each
  rounds differently; TensorFlow's own Eigen kernels are compiled into the wheel (the x86 wheel for
  AVX without FMA, as its start-up notice says), the same code on every CPU that can run it.
  `TF_ENABLE_ONEDNN_OPTS=0` (read once, when TensorFlow loads) chooses them; on two cores they train
  the demo's model within 10% of oneDNN's speed.
- Eigen splits its work by the number of threads, so the intra- and inter-op counts are pinned
  (default 2 each).
- a kernel may pick a non-deterministic algorithm; TensorFlow's op determinism forbids that (on two
  cores it costs 15-20% of the training speed; without it, pinned threads alone also gave
  bit-identical models in a small test, but nothing guarantees that for every op).
Seeds (Python, numpy, TensorFlow, the data order) are set by `train.run.train` as before; with all
three pinned, two processes give bit-identical models (tests/test_reproducible.py).

What remains machine-dependent: a TensorFlow build compiled differently (another wheel, another
architecture such as arm64), GPUs, and the JAX backend.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("trapcam.train")

THREADS = 2


def pin_numerics_environment() -> None:
    """Before TensorFlow is imported: TensorFlow's own kernels instead of oneDNN's (unless the caller
    already chose, e.g. `TF_ENABLE_ONEDNN_OPTS=1` to compare)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def pin_numerics(threads: int = THREADS) -> dict[str, object]:
    """After TensorFlow is imported, before it runs anything: pinned threads and op determinism.

    Returns what is in force, for the run's record. A runtime that already ran ops cannot change its
    thread count: that is said in the log and in the record, not hidden.
    """
    import tensorflow as tf

    record: dict[str, object] = {
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "op_determinism": True,
    }
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        record["threads"] = threads
    except RuntimeError as exc:  # TensorFlow already initialised its thread pools
        record["threads"] = f"not pinned: {exc}"
        log.warning("deterministic training: thread count not pinned (%s)", exc)
    tf.config.experimental.enable_op_determinism()
    if record["onednn"] != "0":
        log.warning("deterministic training: oneDNN is on (TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow loads)")
    return record


__all__ = ["THREADS", "pin_numerics", "pin_numerics_environment"]
