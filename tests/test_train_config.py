"""The training config behaves like the trap's: unknown keys and bad values are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ConfigError
from train.config import load_train_config, parse_train_config

MINIMAL = "run_dir: runs/r1\ndata:\n  kind: synthetic\n"


def test_minimal_config_fills_in_defaults() -> None:
    cfg = parse_train_config(MINIMAL)
    assert cfg.run_dir == Path("runs/r1")
    assert cfg.model.heads == "hierarchical" and cfg.data.image_size == 224
    assert cfg.training.stage2.learning_rate < cfg.training.stage1.learning_rate


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            MINIMAL + "model:\n  backbone: vgg16\n",
            ["t.yaml:5", "model.backbone", "'vgg16'", "'mobilenet_v2'"],
        ),
        (MINIMAL + "model:\n  loss_weights: {genus: 1}\n", ["model", "unknown level(s) ['genus']"]),
        ("run_dir: r\ndata:\n  kind: folder\n", ["t.yaml:2", "data", "path is required"]),
        (
            MINIMAL + "training:\n  stage1:\n    epoch: 3\n",
            ["t.yaml:6", "training.stage1.epoch", "no such key"],
        ),
        ("data: {kind: synthetic}\n", ["run_dir", "required"]),
    ],
)
def test_bad_training_configs(text: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_train_config(text, "t.yaml")
    for part in parts:
        assert part in str(info.value), str(info.value)


def test_missing_training_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.yaml: training config not found"):
        load_train_config(tmp_path / "train.yaml")


def test_example_training_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("train-synthetic.yaml", "train-moths.yaml"):
        cfg = load_train_config(root / name)
        assert cfg.model.heads == "hierarchical"


def test_cosine_schedule_decays_over_the_stage_and_constant_stays() -> None:
    from train.config import FineTuneConfig
    from train.fit import learning_rate

    constant = learning_rate(FineTuneConfig(epochs=10, learning_rate=0.002), None, 320, 32)
    assert constant == 0.002
    stage = FineTuneConfig(epochs=10, learning_rate=0.002, lr_schedule="cosine")
    schedule = learning_rate(stage, None, 310, 32)  # 10 steps per epoch (the last batch is partial)
    at = [float(schedule(step)) for step in (0, 50, 100, 150)]
    assert at[0] == pytest.approx(0.002)
    assert at[1] == pytest.approx(0.002 * (0.05 + 0.95 * 0.5), rel=1e-4)  # half-way down the cosine
    assert at[2] == pytest.approx(0.002 * 0.05, rel=1e-4)  # 5% at the end of the stage's 100 steps
    assert at[3] == pytest.approx(at[2])  # and stays there
    with pytest.raises(ConfigError, match="lr_schedule"):
        parse_train_config(
            "run_dir: r\ndata: {kind: synthetic}\ntraining: {stage2: {lr_schedule: linear}}", "t.yaml"
        )
