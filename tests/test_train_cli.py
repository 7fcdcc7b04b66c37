"""`trapcam train` on a first user's edge cases: no network for ImageNet weights, a taxonomy of one order.

Offline is made on purpose, on any machine: an empty Keras cache (KERAS_HOME) and a proxy on a
port nothing listens on, so that the download fails the way it fails without a network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from helpers import trapcam

from train.presets import synthetic_run_config

ROOT = Path(__file__).resolve().parents[1]


def _train(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return trapcam("train", "--config", str(config), env=env)


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


def test_the_readme_training_path_on_a_folder_of_photos_from_scratch_then_from_its_backbone(
    tmp_path: Path,
) -> None:
    """The README's training section on a folder of JPEG photos (species folders + taxonomy.csv),
    with examples/train-moths.yaml's settings except what this machine cannot do: ImageNet (offline
    here, and MobileNetV2 at 224 px is a GPU's work) becomes a small CNN from scratch, and then a
    second run that starts from the first run's backbone.weights.h5 through the example's two
    stages (heads on frozen features, then fine-tuning): the transfer path end to end. Then
    `trapcam convert` and `trapcam bundle verify`. Nothing may end in a traceback."""
    import cv2
    import yaml

    from edge.synth.species import species_by_name
    from train.config import SyntheticData
    from train.synthetic import write_synthetic_dataset

    names = ["Noctua pronuba", "Cabera pusaria", "Coccinella septempunctata", "Bombus terrestris"]
    rendered = write_synthetic_dataset(SyntheticData(species=names, per_class=40), tmp_path / "render", 4, 64)
    photos = tmp_path / "moth-crops"
    for name in names:
        (photos / name).mkdir(parents=True)
        for i, png in enumerate(sorted((rendered / name).glob("*.png"))):
            cv2.imwrite(
                str(photos / name / f"IMG_{i:04d}.jpg"), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
    rows = ["species,family,order"] + [
        f"{n},{species_by_name(n).family},{species_by_name(n).order}" for n in names
    ]
    (photos / "taxonomy.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    example = yaml.safe_load((ROOT / "examples" / "train-moths.yaml").read_text(encoding="utf-8"))
    example["data"].update(
        path=str(photos), taxonomy=str(photos / "taxonomy.csv"), image_size=48, batch_size=16
    )
    example["model"].update(backbone="small_cnn", weights="none")
    example["training"].update(
        stage1={"epochs": 0},
        stage2={"epochs": 20, "learning_rate": 0.003, "unfreeze": "all", "lr_schedule": "cosine"},
        deterministic=True,
    )
    example["evaluation"]["gradcam_samples"] = 2
    runs = tmp_path / "runs"
    scratch = dict(example, run_dir=str(runs / "scratch"))
    (tmp_path / "scratch.yaml").write_text(yaml.safe_dump(scratch), encoding="utf-8")
    first = _train(tmp_path / "scratch.yaml")
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-2000:]
    assert first.stdout.startswith(f"trapcam train: new run in {runs / 'scratch'}; starting weights: random")

    backbone = runs / "scratch" / "backbone.weights.h5"
    transfer = dict(example, run_dir=str(runs / "transfer"))
    transfer["model"] = dict(example["model"], weights=str(backbone))
    transfer["training"] = dict(
        example["training"],
        stage1={"epochs": 4, "learning_rate": 0.003},
        stage2={"epochs": 4, "learning_rate": 0.0003, "unfreeze": "all"},
    )
    (tmp_path / "transfer.yaml").write_text(yaml.safe_dump(transfer), encoding="utf-8")
    second = _train(tmp_path / "transfer.yaml")
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"starting weights: file {backbone}" in second.stdout.splitlines()[0]
    stages = json.loads((runs / "transfer" / "stages.json").read_text())
    assert [s["stage"] for s in stages["completed"]] == [1, 2]  # heads on frozen features, then all
    report = json.loads((runs / "transfer" / "report.json").read_text())
    assert report["metrics"]["species"]["accuracy"] >= 0.9  # measured 1.000 (deterministic): the path learns

    bundle = tmp_path / "bundles" / "moths"
    for command in (
        ["convert", str(runs / "transfer"), "--out", str(bundle), "--variants", "int8"],
        ["bundle", "inspect", str(bundle)],
        ["bundle", "verify", str(bundle)],
    ):
        done = trapcam(*command)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stderr[-2000:])
    assert json.loads((bundle / "model.json").read_text())["open_set"]["level"] == "species"
