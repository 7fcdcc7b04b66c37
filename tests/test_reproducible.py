"""The demo's front door: reproducible training, pixel-noise augmentation, and a quiet screen.

- `training.deterministic` with oneDNN off: two fresh processes with the same seed write bit-identical
  models (what makes the demo's figures the same on every x86 CPU); a different seed does not.
- pixel-noise augmentation: noise of the configured std in training, none at inference.
- `edge.native_log`: native writes to descriptor 2 land in the log file, Python's stderr stays on
  the terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

TRAIN_TWICE = """
import sys
from pathlib import Path
from train.config import parse_train_config
from train.presets import synthetic_run_config
from train.run import train

for arg in sys.argv[1:]:  # RUN_DIR:SEED ...
    run_dir, seed = arg.rsplit(":", 1)
    text = synthetic_run_config(Path(run_dir), ["Noctua pronuba", "Autographa gamma", "Cabera pusaria"],
        image_size=32, per_class=12, epochs=2, seed=int(seed), deterministic=True, noise=8.0,
        backbone="small_cnn")  # the demo's
    train(parse_train_config(text, "reproducible"))
"""


def _weights_digest(run_dir: Path) -> str:
    import keras

    import train.model  # noqa: F401  (custom layers)

    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def _train(*runs: tuple[Path, int]) -> None:
    """Train each (run folder, seed) in turn, in one fresh process."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_TWICE, *(f"{run_dir}:{seed}" for run_dir, seed in runs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_deterministic_training_gives_bit_identical_models_from_the_same_seed(tmp_path: Path) -> None:
    _train((tmp_path / "a", 3))
    _train((tmp_path / "b", 3), (tmp_path / "c", 4))  # a second process, and another seed in it
    first, again, other = (_weights_digest(tmp_path / name) for name in "abc")
    assert first == again
    assert first != other  # the digest sees the weights: another seed gives another model
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["numerics"] == {"onednn": "0", "op_determinism": True, "threads": 2}


def test_pixel_noise_augmentation_perturbs_in_training_only() -> None:
    """augment.noise adds Gaussian noise of that std (0-255 scale) while training, nothing at inference."""
    from train.config import AugmentConfig
    from train.model import augmentation

    still = {"flip": False, "rotation": 0, "zoom": 0, "contrast": 0, "brightness": 0}
    pipeline = augmentation(AugmentConfig(**still, noise=8.0))
    assert pipeline is not None and [layer.name for layer in pipeline.layers] == ["noise"]
    images = np.full((16, 32, 32, 3), 128.0, dtype="float32")
    trained = np.asarray(pipeline(images, training=True))
    assert float(np.std(trained - images)) == pytest.approx(8.0, rel=0.05)
    assert np.array_equal(np.asarray(pipeline(images, training=False)), images)
    assert augmentation(AugmentConfig(**still)) is None


def test_pixel_noise_is_validated_in_the_training_config() -> None:
    from edge.errors import ConfigError
    from train.config import parse_train_config
    from train.presets import synthetic_run_config

    text = synthetic_run_config(Path("/tmp/x"), ["Noctua pronuba", "Autographa gamma"], noise=65.0)
    assert "augment: {noise: 65}" in text
    with pytest.raises(ConfigError, match="noise"):
        parse_train_config(text, "bad")
    quiet = synthetic_run_config(Path("/tmp/x"), ["Noctua pronuba", "Autographa gamma"], colour_augment=False)
    parsed = parse_train_config(quiet, "ok").augment
    assert (parsed.contrast, parsed.brightness, parsed.noise, parsed.flip) == (0.0, 0.0, 0.0, True)


NATIVE = """
import os, sys
from pathlib import Path
from edge.native_log import divert_native_stderr, diverted_to
os.write(2, b"before the diversion\\n")
log = divert_native_stderr(Path(sys.argv[1]))
assert diverted_to() == log and divert_native_stderr(Path(sys.argv[1] + ".other")) == log
os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\\n")  # what C++ libraries do
print("trapcam: error: a line for the user", file=sys.stderr)
"""


def test_native_stderr_goes_to_the_log_and_python_stderr_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "native.log"
    done = subprocess.run(
        [sys.executable, "-c", NATIVE, str(log)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["before the diversion", "trapcam: error: a line for the user"]
    assert log.read_text() == "I0000 port.cc:153] oneDNN custom operations are on\n"
    assert not Path(f"{log}.other").exists()
