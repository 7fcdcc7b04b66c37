"""Whether a run folder may be trained into: a new run, or `--resume` of the same data and config.

Why: `trapcam train` used to resume whatever the folder held. A user who added photos and ran
the command again got the old split and the old model back in seconds, with exit 0 and the new
photos in no file (issue 25). Now a folder that holds a run is refused unless `--resume` is
given, and `--resume` is refused when the data or the config differ from the run's own, naming
what differs. A folder "holds a run" once its split manifest is written, which happens only
after every image has loaded: a run that failed on a bad image leaves nothing that blocks the
next one.

Nothing here imports TensorFlow or Keras: the CLI checks the folder before they load.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from edge.errors import TrapcamError
from train.config import TrainConfig
from train.dataset_files import manifest_image

SPLITS_FILE = "splits.csv"  # written after every image loaded: its presence means "a run is here"
CONFIG_SNAPSHOT = "train.yaml"
# Keys that may differ on --resume: where the run is, how progress is shown, how images are fed,
# and the evaluation, which runs again after training (thresholds, Grad-CAM, top-k).
RESUMABLE_CHANGES = ("run_dir", "training.progress", "data.cache", "data.pipeline", "evaluation.")
SHOWN = 3  # changed keys or files named in one line


class RunFolderError(TrapcamError):
    """The run folder holds another run, or --resume meets other data or another config."""


@dataclass(frozen=True)
class RunState:
    """What a run folder holds: nothing yet, a run that stopped before its report, or a whole run."""

    kind: Literal["empty", "unfinished", "finished"]
    detail: str = ""
    epochs_done: int = 0  # epochs whose end was written (history.csv)

    def describe(self) -> str:
        if self.kind == "empty":
            return "no run"
        article = "an" if self.kind == "unfinished" else "a"
        return f"{article} {self.kind} run ({self.detail})" if self.detail else f"{article} {self.kind} run"


def _unfinished(run_dir: Path) -> RunState:
    history = run_dir / "history.csv"
    rows: list[dict[str, str]] = []
    if history.is_file():
        with history.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        return RunState("unfinished", "stopped before its first epoch ended", 0)
    last = rows[-1]
    detail = f"stopped after epoch {int(last.get('epoch') or 0) + 1}, stage {last.get('stage') or '?'}"
    return RunState("unfinished", detail, len(rows))


def run_state(run_dir: Path) -> RunState:
    """Read what `run_dir` holds, from its files alone (cheap: no model is loaded)."""
    run_dir = Path(run_dir)
    if not (run_dir / SPLITS_FILE).is_file():
        return RunState("empty")
    report = run_dir / "report.json"
    if report.is_file() and (run_dir / "model.keras").is_file():
        try:
            metrics = json.loads(report.read_text(encoding="utf-8")).get("metrics", {})
            deepest = list(metrics)[-1]
            detail = f"{deepest} macro F1 {float(metrics[deepest]['macro_f1']):.3f}"
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            detail = "report.json unreadable"
        return RunState("finished", detail)
    return _unfinished(run_dir)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that differs, except those a resume may change."""
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_CHANGES):
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key, '(not set)')} -> {new.get(key, '(not set)')}")
    return changes


def _named(what: str, paths: list[str]) -> str:
    shown = ", ".join(Path(p).name for p in paths[:SHOWN])
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    noun = "image" if len(paths) == 1 else "images"
    return f"{len(paths)} {noun} {what} ({shown}{more})"


def data_changes(splits_path: Path, current: dict[str, tuple[str, str]]) -> list[str]:
    """Images added, removed, changed or relabelled since the run's split was written.

    current: absolute path -> (sha256, species) of the dataset as loaded now.
    """
    recorded: dict[str, tuple[str, str]] = {}
    with Path(splits_path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            image = manifest_image(row["path"], Path(splits_path).parent.absolute())
            recorded[str(image)] = (row["sha256"], row["species"])
    added = sorted(set(current) - set(recorded))
    removed = sorted(set(recorded) - set(current))
    both = sorted(set(current) & set(recorded))
    changed = [p for p in both if current[p][0] != recorded[p][0]]
    relabelled = [p for p in both if current[p][0] == recorded[p][0] and current[p][1] != recorded[p][1]]
    out = []
    for kind, paths in (
        ("added", added),
        ("removed", removed),
        ("changed", changed),
        ("relabelled", relabelled),
    ):
        if paths:
            out.append(_named(kind, paths))
    return out


def _with_defaults(saved: Any) -> dict[str, Any]:
    """The saved config with this version's defaults filled in, so that a setting added since the
    run was made is not taken for a change; as saved when it no longer validates."""
    if not isinstance(saved, dict):
        return {}
    try:
        return TrainConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:
        return saved


def check_run_folder(cfg: TrainConfig, resume: bool) -> RunState:
    """The folder's state if this run may go ahead; RunFolderError (one line) if not.

    Without `resume` a folder holding a run is refused; with it, the config must be the run's own
    (but for RESUMABLE_CHANGES). The data is compared after it loads (`check_same_data`).
    """
    run_dir = Path(cfg.run_dir)
    state = run_state(run_dir)
    if state.kind == "empty":
        return state
    if state.kind == "unfinished" and state.epochs_done == 0 and not resume:
        # Nothing was learnt (a batch too big for the GPU, a kill in the first epoch): the new run
        # replaces it, whatever its config, and says so (`clear_untrained_run`).
        return RunState("empty", "replacing a run that stopped before its first epoch ended")
    if not resume:
        raise RunFolderError(
            f"run_dir {run_dir}: holds {state.describe()}. Add --resume to continue it with the same data "
            "and config, or set run_dir to a new folder for a new run (nothing is overwritten)"
        )
    snapshot = run_dir / CONFIG_SNAPSHOT
    try:
        saved = yaml.safe_load(snapshot.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunFolderError(
            f"--resume: {snapshot}: cannot read the run's config ({type(exc).__name__}); "
            "set run_dir to a new folder"
        ) from None
    changes = config_changes(_with_defaults(saved), cfg.model_dump(mode="json"))
    if changes:
        more = f" and {len(changes) - SHOWN} more" if len(changes) > SHOWN else ""
        raise RunFolderError(
            f"--resume: {run_dir} was trained with another config: {'; '.join(changes[:SHOWN])}{more}. "
            "Put those settings back to resume it, or set run_dir to a new folder for the new config"
        )
    return state


def check_same_data(run_dir: Path, current: dict[str, tuple[str, str]]) -> None:
    """RunFolderError naming what changed if the data is not the data the run was split from."""
    changes = data_changes(Path(run_dir) / SPLITS_FILE, current)
    if changes:
        raise RunFolderError(
            f"--resume: the data changed since {Path(run_dir) / SPLITS_FILE} was written: "
            f"{'; '.join(changes)}. A resumed run keeps its split, so it cannot learn them: "
            "set run_dir to a new folder to train on the data as it is now"
        )


# What a run writes before and during its first epoch (fit: checkpoints, backups, history).
_RUN_FILES = (CONFIG_SNAPSHOT, SPLITS_FILE, "class_counts.csv", "history.csv", "stages.json")
_RUN_FOLDERS = ("checkpoints", "backup")


def clear_untrained_run(run_dir: Path) -> None:
    """Remove what a run that never finished an epoch left, before a new run replaces it."""
    for name in _RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
    for name in _RUN_FOLDERS:
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)
