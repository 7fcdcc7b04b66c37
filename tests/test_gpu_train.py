"""bench/gpu_train.py, the prepared run for a lent GPU machine (issue 24), end to end on the CPU.

A lent machine has JAX and CUDA but no TensorFlow, and sends the run folder back to a machine that
converts it. So the bench runs here under KERAS_BACKEND=jax with TensorFlow out of reach (a site
folder of this environment's packages without it, Python started with -S), on a tiny configuration;
then what it packs for the device tool's $OUT comes back, is unpacked at another path, and `trapcam
convert` (TensorFlow, here) reads it and runs its int8 budget check. The convert failed before this
test: splits.csv named the images by absolute paths of the training machine. (Training under JAX
without TensorFlow had never run; it works.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import ROOT, trapcam

TENSORFLOW_PARTS = ("tensorflow", "tensorboard", "tf_keras", "tf2onnx")


def site_without_tensorflow(folder: Path) -> Path:
    """A folder of links to every installed package but TensorFlow's: what a GPU machine has."""
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(TENSORFLOW_PARTS):
            (folder / entry.name).symlink_to(entry.resolve())
    return folder


@pytest.mark.slow
def test_the_gpu_bench_trains_without_tensorflow_and_its_run_converts_elsewhere(tmp_path: Path) -> None:
    site = site_without_tensorflow(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{site}", KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import keras, jax\nimport tensorflow"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert "No module named 'tensorflow'" in probe.stderr, probe.stderr[-500:]  # it is really out of reach

    run = tmp_path / "gpu-machine" / "run"
    sent = tmp_path / "gpu-machine" / "out"  # the device tool's $OUT: at most 8 files of 16 MiB
    tiny = [
        "--backbone",
        "small_cnn",
        "--size",
        "32",
        "--per-class",
        "12",
        "--batch",
        "16",
        "--epochs",
        "1",
        "1",
    ]
    done = subprocess.run(
        [sys.executable, "-S", "-m", "bench.gpu_train", "--out", str(run), "--pack", str(sent), *tiny],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Keras" in done.stdout and "(jax)" in done.stdout and "training on CPU" in done.stdout
    for row in (
        "training, stage 1",
        "training, stage 2",
        "input: decode + resize",
        "input: batches from memory",
    ):
        assert row in done.stdout, done.stdout
    assert "slower input step / training (goal >= 2x)" in done.stdout
    assert "file model.keras:" in done.stdout and "over the 16 MiB" not in done.stdout
    packed = sorted(p.name for p in sent.iterdir())
    assert packed[0] == "model.keras" and packed[1:] == [f"run-{n}.tar" for n in range(1, len(packed))]
    assert len(packed) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in sent.iterdir())

    here = tmp_path / "laptop" / "run"  # what came back, on another machine (another path)
    shutil.rmtree(run)
    unpacked = subprocess.run(
        [sys.executable, "-m", "bench.gpu_train", "--unpack", str(sent), "--out", str(here)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    assert not (here / "checkpoints").exists() and (here / "splits.csv").is_file()
    bundle = tmp_path / "bundle"
    converted = trapcam("convert", str(here), "--out", str(bundle), "--variants", "int8", timeout=400)
    assert "does not exist" not in converted.stderr, converted.stderr[-2000:]
    assert "Traceback" not in converted.stderr
    # The budget check ran on the moved run's own test crops: a bundle, or its verdict on a model
    # trained one epoch per stage (too little for int8 to keep every near-tie, and said so).
    verdict = (here / "quantization_check.txt").read_text(encoding="utf-8").splitlines()[-1]
    assert verdict.startswith("verdict: "), verdict
    if converted.returncode == 0:
        assert (bundle / "model.json").is_file()
    else:
        assert converted.returncode == 1 and "quantization_check.txt" in converted.stderr, converted.stderr
