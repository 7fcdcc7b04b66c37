"""`trapcam train` on a first user's edge cases: no network for ImageNet weights, a taxonomy of one order.

Offline is made on purpose, on any machine: an empty Keras cache (KERAS_HOME) and a proxy on a
port nothing listens on, so that the download fails the way it fails without a network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from train.presets import synthetic_run_config

ROOT = Path(__file__).resolve().parents[1]


def _train(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_imagenet_weights_offline_give_one_line_and_leave_no_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tmp_path / "train.yaml"
    text = synthetic_run_config(
        run_dir, ["Noctua pronuba", "Coccinella septempunctata"], image_size=96, per_class=6
    )
    text = text.replace("weights: none", "weights: imagenet")
    assert "weights: imagenet" in text and "backbone: mobilenet_v2" in text
    config.write_text(text, encoding="utf-8")
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env.update(KERAS_HOME=str(tmp_path / "keras"), HTTPS_PROXY=proxy, HTTP_PROXY=proxy)
    out = _train(config, env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == (
        f"trapcam train: new run in {run_dir}; starting weights: ImageNet (mobilenet_v2: Keras' download, "
        "or its copy in ~/.keras/models)"
    )
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # no traceback
    line = lines[0]
    assert line.startswith(
        "trapcam: error: model.weights: imagenet: cannot download the ImageNet weights of mobilenet_v2"
    )
    for way in ("network access", "model.weights: path/to/backbone.weights.h5", "model.weights: none"):
        assert way in line
    assert not (run_dir / "splits.csv").exists() and not (run_dir / "train.yaml").exists()


def test_a_taxonomy_of_one_order_is_said_once_and_keras_warnings_stay_off_the_screen(tmp_path: Path) -> None:
    """Issue 25: moths only (one order) gave Keras' one-class softmax warnings and no word from trapcam."""
    run_dir = tmp_path / "run"
    config = tmp_path / "train.yaml"
    moths = ["Noctua pronuba", "Autographa gamma", "Cabera pusaria"]  # all Lepidoptera
    text = synthetic_run_config(run_dir, moths, image_size=32, per_class=8, epochs=1, backbone="small_cnn")
    config.write_text(text, encoding="utf-8")
    out = _train(config)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "order: every image is Lepidoptera, so that head always answers Lepidoptera (nothing to learn there;"
        " it is kept so that the trap counts per order as for any model)"
    ]
    assert "order          1.000" in out.stdout
