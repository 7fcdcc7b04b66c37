"""Run folders (issue 25): a new run never silently reuses an old one; --resume checks data and config.

The whole command (refusal, --resume, a changed config and an added photo) is run in
test_train_run.py on a trained run; here the rules on real files, without training.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from train.config import parse_train_config
from train.dataset import file_sha256
from train.presets import synthetic_run_config
from train.run_folder import (
    RunFolderError,
    check_run_folder,
    check_same_data,
    config_changes,
    data_changes,
    run_state,
)

SPECIES = ["Noctua pronuba", "Autographa gamma", "Cabera pusaria"]


def _config(run_dir: Path, **kw: object):
    return parse_train_config(
        synthetic_run_config(
            run_dir, SPECIES, **{"image_size": 32, "per_class": 8, "epochs": 1, "backbone": "small_cnn", **kw}
        ),
        "test",
    )


def _snapshot(cfg) -> None:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "train.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (cfg.run_dir / "splits.csv").write_text("split,path,species,family,order,sha256\n")
    (cfg.run_dir / "history.csv").write_text("epoch,stage,loss\n0,2,2.0\n")  # one epoch learnt


def test_a_folder_holds_a_run_once_its_split_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_state(run).kind == "empty"  # not there yet
    run.mkdir()
    (run / "native.log").write_text("left by a run that failed while loading images\n")
    (run / "class_counts.csv").write_text("x\n")
    assert run_state(run).kind == "empty"
    (run / "splits.csv").write_text("split,path,species,family,order,sha256\n")
    assert run_state(run) == run_state(run).__class__("unfinished", "stopped before its first epoch ended")
    (run / "history.csv").write_text("epoch,stage,loss\n0,1,2.0\n1,1,1.5\n2,2,1.0\n")
    assert run_state(run).detail == "stopped after epoch 3, stage 2"
    (run / "report.json").write_text(
        json.dumps({"metrics": {"order": {"macro_f1": 1.0}, "species": {"macro_f1": 0.8125}}})
    )
    assert run_state(run).kind == "unfinished"  # no model yet: the run stopped while writing its report
    (run / "model.keras").write_bytes(b"model")
    assert run_state(run).describe() == "a finished run (species macro F1 0.812)"


def test_a_folder_holding_a_run_is_refused_without_resume(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "run")
    assert check_run_folder(cfg, resume=False).kind == "empty"
    assert check_run_folder(cfg, resume=True).kind == "empty"  # nothing to resume: a new run
    _snapshot(cfg)
    with pytest.raises(
        RunFolderError, match=r"holds an unfinished run \(stopped after epoch 1, stage 2\)\. Add --resume"
    ):
        check_run_folder(cfg, resume=False)
    assert check_run_folder(cfg, resume=True).kind == "unfinished"


def test_resume_names_the_settings_that_changed_and_lets_the_evaluation_change(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "run")
    _snapshot(cfg)
    evaluation = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"threshold_k": 2.0})})
    assert check_run_folder(evaluation, resume=True).kind == "unfinished"
    other = _config(tmp_path / "run", seed=5, image_size=48)
    with pytest.raises(RunFolderError) as err:
        check_run_folder(other, resume=True)
    assert str(err.value).startswith(f"--resume: {cfg.run_dir} was trained with another config: ")
    assert "data.image_size: 32 -> 48; seed: 1 -> 5." in str(err.value)


def test_a_setting_added_by_a_later_version_is_not_a_change() -> None:
    saved = {"seed": 1, "data": {"kind": "synthetic"}}
    now = {"seed": 1, "data": {"kind": "synthetic", "new_option": 3}}
    assert config_changes(saved, now) == ["data.new_option: (not set) -> 3"]  # raw: would refuse
    cfg = _config(Path("/tmp/x"))
    saved_config = cfg.model_dump(mode="json")
    del saved_config["augment"]["noise"]  # as written by a version that had no such setting
    from train.run_folder import _with_defaults

    assert config_changes(_with_defaults(saved_config), cfg.model_dump(mode="json")) == []


def _image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))
    return path


def test_data_changes_name_added_removed_changed_and_relabelled_images(tmp_path: Path) -> None:
    a, b, c, d = (_image(tmp_path / f"{n}.png", v) for n, v in (("a", 10), ("b", 20), ("c", 30), ("d", 40)))
    manifest = tmp_path / "splits.csv"
    rows = ["split,path,species,family,order,sha256"]
    for split, p, species in (("train", a, "x"), ("train", b, "x"), ("test", c, "y"), ("test", d, "y")):
        rows.append(f"{split},{p},{species},f,o,{file_sha256(p)}")
    manifest.write_text("\n".join(rows) + "\n")
    same = {str(p): (file_sha256(p), s) for p, s in ((a, "x"), (b, "x"), (c, "y"), (d, "y"))}
    assert data_changes(manifest, same) == []
    check_same_data(tmp_path, same)

    _image(b, 99)  # new bytes under the same name
    e = _image(tmp_path / "e.png", 50)
    now = {
        str(a): (file_sha256(a), "x"),
        str(b): (file_sha256(b), "x"),
        str(c): (file_sha256(c), "x"),  # moved to another species' folder
        str(e): (file_sha256(e), "y"),
    }
    assert data_changes(manifest, now) == [
        "1 image added (e.png)",
        "1 image removed (d.png)",
        "1 image changed (b.png)",
        "1 image relabelled (c.png)",
    ]
    with pytest.raises(RunFolderError, match=r"the data changed since .*1 image added \(e.png\);"):
        check_same_data(tmp_path, now)


def test_a_run_that_fails_while_loading_images_leaves_no_split(tmp_path: Path, monkeypatch) -> None:
    """Issue 25: a split written before a bad image failed the run made the next run fail on it."""
    import train.inputs as inputs
    from train.dataset import DatasetError
    from train.run import train

    def broken(samples, size):
        raise DatasetError("image x.jpg: cannot be decoded")

    monkeypatch.setattr(inputs, "load_images", broken)
    cfg = _config(tmp_path / "run")
    with pytest.raises(DatasetError, match="cannot be decoded"):
        train(cfg)
    assert not (cfg.run_dir / "splits.csv").exists() and not (cfg.run_dir / "train.yaml").exists()
    assert run_state(cfg.run_dir).kind == "empty"
    assert check_run_folder(cfg, resume=False).kind == "empty"  # the next run may go ahead


def test_a_run_that_learnt_nothing_is_replaced_by_the_next_and_cleared(tmp_path: Path) -> None:
    """A batch too big for the GPU stops a run in its first epoch: the next run (with a smaller
    batch, another config) replaces it and says so, instead of being refused."""
    from train.run_folder import clear_untrained_run

    cfg = _config(tmp_path / "run")
    _snapshot(cfg)
    (cfg.run_dir / "history.csv").unlink()
    (cfg.run_dir / "checkpoints").mkdir()
    (cfg.run_dir / "checkpoints" / "best.keras").write_bytes(b"x")
    (cfg.run_dir / "native.log").write_text("kept: the log of the run that failed\n")
    other = _config(tmp_path / "run", seed=9)
    state = check_run_folder(other, resume=False)
    assert (state.kind, state.detail) == (
        "empty",
        "replacing a run that stopped before its first epoch ended",
    )
    with pytest.raises(RunFolderError, match="seed: 1 -> 9"):  # --resume still compares the config
        check_run_folder(other, resume=True)
    clear_untrained_run(cfg.run_dir)
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == ["native.log"]
