"""Two-stage transfer learning that survives being killed.

Stage 1 trains only the heads on a frozen backbone (the new heads' large random gradients
would otherwise wreck the pretrained features); stage 2 unfreezes the top backbone layers (or
all), keeps BatchNorm frozen, recompiles, and fine-tunes at a small learning rate.

Everything a rerun needs is on disk under run_dir:
- `checkpoints/best.keras`: the best model so far by validation loss over both stages;
- `checkpoints/stage<N>_best.weights.h5`: the best weights of each stage (early stopping's
  "restore best weights" that also survives a crash);
- `backup/stage<N>/`: Keras BackupAndRestore state (weights, optimizer, epoch) of the stage
  in progress;
- `history.csv`: one row per epoch, epochs numbered across both stages;
- `stages.json`: the stages finished, so a rerun skips them and resumes the interrupted one.
A rerun with --resume (same data and config) after a crash therefore continues where the run stopped.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from edge.errors import TrapcamError
from train.allocator import keep_freed_memory
from train.config import StageConfig, TrainConfig, TrainingConfig
from train.model import BuiltModel, compile_for_stage, freeze_backbone, unfreeze

log = logging.getLogger("trapcam.train.fit")

STAGES_FILE = "stages.json"
HISTORY_FILE = "history.csv"
BEST_FILE = "best.keras"


class FitError(TrapcamError):
    """Training cannot start or resume (inconsistent run directory, missing validation data)."""


# ------------------------------------------------------------------ devices


@dataclass
class DevicePlan:
    """What the run uses: mixed precision on or off, and a distribution strategy or none.

    Call `configure_devices` before `build_model`: the dtype policy and the strategy scope must
    be in force while the model's variables are created.
    """

    mixed_precision: bool
    gpus: int
    backend: str
    strategy: Any = None
    notes: list[str] = field(default_factory=list)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> str:
        strategy = type(self.strategy).__name__ if self.strategy is not None else "none"
        return (
            f"backend {self.backend}, {self.gpus} GPU(s), mixed precision "
            f"{'on' if self.mixed_precision else 'off'}, strategy {strategy}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "gpus": self.gpus,
            "mixed_precision": self.mixed_precision,
            "strategy": type(self.strategy).__name__ if self.strategy is not None else None,
            "notes": list(self.notes),
        }


def visible_gpus() -> int:
    """GPUs the current Keras backend can use (0 on a CPU-only install)."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return len(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return sum(1 for d in jax.devices() if d.platform == "gpu")
        if backend == "torch":
            import torch

            return int(torch.cuda.device_count())
    except Exception as exc:  # a broken CUDA install must not stop CPU training
        log.warning("cannot list GPUs (%s); assuming none", exc)
    return 0


def configure_devices(training: TrainingConfig) -> DevicePlan:
    """Set the global dtype policy and pick a strategy from the config; logs the choice.

    mixed_precision 'auto' is on only with a GPU (float16 on a CPU is slower, not faster);
    distribute 'auto' uses MirroredStrategy only with more than one GPU on the TensorFlow
    backend (the other backends train on one device here).
    """
    backend = keras.backend.backend()
    gpus = visible_gpus()
    notes: list[str] = []
    if training.mixed_precision == "on":
        mixed = True
        if gpus == 0:
            notes.append("mixed precision forced on without a GPU (slow on CPU)")
    elif training.mixed_precision == "off":
        mixed = False
    else:
        mixed = gpus > 0
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")

    strategy = None
    if training.distribute == "auto" and gpus > 1:
        if backend == "tensorflow":
            import tensorflow as tf

            strategy = tf.distribute.MirroredStrategy()
        else:
            notes.append(f"{gpus} GPUs but backend {backend}: MirroredStrategy needs TensorFlow; one device")
    plan = DevicePlan(mixed_precision=mixed, gpus=gpus, backend=backend, strategy=strategy, notes=notes)
    log.info("devices: %s", plan.describe(), extra={"fields": plan.as_dict()})
    for note in notes:
        log.warning(note)
    return plan


def _current_plan(training: TrainingConfig) -> DevicePlan:
    """The plan in force when the caller did not configure devices: never changes the policy."""
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    plan = DevicePlan(mixed_precision=mixed, gpus=visible_gpus(), backend=keras.backend.backend())
    if training.mixed_precision == "on" and not mixed:
        plan.notes.append(
            "mixed_precision 'on' but the model was built in float32: call configure_devices first"
        )
    if training.distribute == "auto" and plan.gpus > 1:
        plan.notes.append("several GPUs but no strategy: call configure_devices before build_model")
    for note in plan.notes:
        log.warning(note)
    return plan


# ------------------------------------------------------------------ history files


def read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of history.csv (numbers as float, epoch/stage as int); a re-logged epoch keeps its last row."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_epoch: dict[int, dict[str, Any]] = {}
    for raw in rows:
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key is None:
                continue
            row[key] = _number(value)
        try:
            epoch = int(row["epoch"])
        except (KeyError, TypeError, ValueError):
            raise FitError(f"{path}: row without a valid epoch: {raw}") from None
        row["epoch"] = epoch
        if isinstance(row.get("stage"), float):
            row["stage"] = int(row["stage"])
        by_epoch[epoch] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _number(value: str | None) -> Any:
    if value is None or value == "" or value == "NA":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _truncate_history(path: Path, keep_below_epoch: int) -> None:
    """Drop rows of epochs that will be trained again (logged after the last backup)."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        lines = list(reader)
    if not lines:
        return
    header, body = lines[0], lines[1:]
    kept = [r for r in body if r and _epoch_of(r) < keep_below_epoch]
    if len(kept) == len(body):
        return
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(kept)
    os.replace(tmp, path)


def _epoch_of(row: list[str]) -> int:
    try:
        return int(float(row[0]))
    except (ValueError, IndexError):
        return -1


def _read_stages(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"completed": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FitError(f"{path}: unreadable stage record ({exc}); delete it to restart training") from None
    if not isinstance(data, dict) or not isinstance(data.get("completed"), list):
        raise FitError(f"{path}: not a stage record (no 'completed' list); delete it to restart training")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# ------------------------------------------------------------------ callbacks


class EpochStats(keras.callbacks.Callback):
    """Adds stage, wall seconds, training seconds and images/s to each epoch's logs.

    Must come before the CSV logger: callbacks share the logs dict, so the logger writes these
    columns too. images/s counts training only (validation excluded).
    """

    def __init__(self, stage: int, images_per_epoch: int | None, batch_size: int) -> None:
        super().__init__()
        self.stage = stage
        self.images_per_epoch = images_per_epoch
        self.batch_size = batch_size
        self._start = 0.0
        self._last_train = 0.0
        self._batches = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._last_train = self._start
        self._batches = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._last_train = time.perf_counter()
        self._batches = batch + 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        now = time.perf_counter()
        train_s = max(self._last_train - self._start, 1e-9)
        images = self.images_per_epoch or self._batches * self.batch_size
        logs["stage"] = self.stage
        logs["seconds"] = round(now - self._start, 4)
        logs["train_seconds"] = round(train_s, 4)
        logs["images"] = images
        logs["images_per_s"] = round(images / train_s, 2)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose best value and patience count carry over from before a crash.

    Keras resets both at train begin; a resumed stage would otherwise get fresh patience and
    treat its first epoch as the best one.
    """

    def __init__(self, prior_val_losses: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prior = [float(v) for v in prior_val_losses if v is not None and math.isfinite(float(v))]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.prior:
            best_index = min(range(len(self.prior)), key=self.prior.__getitem__)
            self.best = self.prior[best_index]
            self.wait = len(self.prior) - 1 - best_index


class AlignedCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger(append=True) that keeps the existing file's columns when it appends.

    Keras picks the columns from the first epoch of each fit() call; if a later stage or a
    resumed run logged a different set, appended rows would land under the wrong headers.
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        header: list[str] = []
        path = Path(self.filename)
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        super().on_train_begin(logs)
        if header and header[0] == "epoch":
            self.keys = header[1:]


# ------------------------------------------------------------------ fitting


@dataclass
class FitResult:
    """What training did: per-epoch history (both stages), per-stage summaries, best checkpoint."""

    history: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    best_val_loss: float | None
    best_checkpoint: Path
    seconds: float  # wall seconds of every epoch of the run, resumed sessions included (`throughput`)
    images_per_s: float | None  # all training images over all training seconds (`throughput`)
    devices: dict[str, Any]
    resumed: bool

    @property
    def stopped_early(self) -> bool:
        return any(s.get("stopped_early") for s in self.stages)


def _verbose(training: TrainingConfig) -> int:
    return {"bar": 1, "epoch": 2, "off": 0}[training.progress]


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _min_val_loss(rows: Sequence[dict[str, Any]]) -> float | None:
    values = [v for v in (_finite(r.get("val_loss")) for r in rows) if v is not None]
    return min(values) if values else None


def _backup_epoch(backup_dir: Path) -> int | None:
    meta = backup_dir / "training_metadata.json"
    if not meta.is_file():
        return None
    try:
        return int(json.loads(meta.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FitError(
            f"{meta}: unreadable backup ({exc}); delete {backup_dir} to restart this stage"
        ) from None


def _check_backup(built: BuiltModel, backup_dir: Path) -> None:
    """Fail with a clear line when a backup does not match this model (config changed)."""
    weights = backup_dir / "latest.weights.h5"
    if not weights.is_file():
        return
    model = built.model
    try:
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(str(weights))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FitError(
            f"{weights}: backup does not match this model ({first}); "
            f"the config changed? delete {backup_dir} or use a new run_dir"
        ) from None


def _iter_stages(cfg: TrainConfig) -> Iterator[tuple[int, Any]]:
    yield 1, cfg.training.stage1
    yield 2, cfg.training.stage2


def learning_rate(
    stage_cfg: StageConfig, train_batches: Any, train_images: int | None, batch_size: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The stage's rate, or its cosine decay to 5% over the stage's optimizer steps.

    The schedule is a function of the optimizer's step count, which BackupAndRestore restores, so
    a resumed stage continues the curve where it stopped.
    """
    if stage_cfg.lr_schedule == "constant" or stage_cfg.epochs == 0:
        return stage_cfg.learning_rate
    steps = math.ceil(train_images / batch_size) if train_images is not None else len(train_batches)
    return keras.optimizers.schedules.CosineDecay(
        stage_cfg.learning_rate, decay_steps=max(1, steps * stage_cfg.epochs), alpha=0.05
    )


def fit_two_stage(
    built: BuiltModel,
    train_batches: Any,
    val_batches: Any,
    cfg: TrainConfig,
    run_dir: Path,
    levels: Sequence[str] | None = None,
    *,
    plan: DevicePlan | None = None,
    train_images: int | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FitResult:
    """Stage 1 (frozen backbone) then stage 2 (fine-tuning); resumes an interrupted run.

    train_batches / val_batches: anything `Model.fit` accepts that yields (images 0-255,
    {level: int labels}, {level: sample weights}). train_images: images per training epoch, for
    images/s (default: batches x batch size). extra_callbacks run after the built-in ones (tests
    use one to kill the process mid-run). On return the model holds the weights of
    `checkpoints/best.keras`, the best epoch by validation loss over both stages.
    """
    if val_batches is None:
        raise FitError("fit_two_stage needs validation batches: checkpoints and early stopping use val_loss")
    keep_freed_memory()  # a third of the CPU time went to faulting freed pages in again (allocator.py)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    backup_root = run_dir / "backup"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    backup_root.mkdir(parents=True, exist_ok=True)
    history_path = run_dir / HISTORY_FILE
    stages_path = run_dir / STAGES_FILE
    best_path = ckpt_dir / BEST_FILE
    if plan is None:
        plan = _current_plan(cfg.training)
    heads = tuple(levels) if levels is not None else built.levels
    record = _read_stages(stages_path)
    done = {int(s["stage"]): s for s in record["completed"]}
    resumed = bool(done) or history_path.is_file()
    started = time.perf_counter()
    verbose = _verbose(cfg.training)
    epoch_offset = 0

    for stage, stage_cfg in _iter_stages(cfg):
        final_weights = ckpt_dir / f"stage{stage}_final.weights.h5"
        if stage in done:
            epoch_offset = int(done[stage]["next_epoch"])
            log.info("stage %d already finished (%d epochs); skipping", stage, done[stage]["epochs_run"])
            continue
        if stage == 2 and 1 in done:
            prev = ckpt_dir / "stage1_final.weights.h5"
            if not prev.is_file():
                raise FitError(f"{prev}: missing, but {stages_path} says stage 1 finished; delete {run_dir}")
            with plan.scope():
                _load_model_weights(built, prev)

        if stage == 1:
            trainable = freeze_backbone(built)
            lr = stage_cfg.learning_rate
        else:
            trainable = unfreeze(
                built,
                stage_cfg.unfreeze,
                stage_cfg.unfreeze_layers,
                freeze_batchnorm=cfg.model.weights.lower() != "none",
            )
            lr = stage_cfg.learning_rate
        with plan.scope():
            compile_for_stage(
                built,
                learning_rate(stage_cfg, train_batches, train_images, cfg.data.batch_size),
                cfg.model,
                heads,
            )

        backup_dir = backup_root / f"stage{stage}"
        resume_epoch = _backup_epoch(backup_dir)
        start_epoch = resume_epoch if resume_epoch is not None else epoch_offset
        _truncate_history(history_path, start_epoch)
        rows = read_history(history_path)
        stage_rows = [r for r in rows if r.get("stage") == stage]
        stage_best_path = ckpt_dir / f"stage{stage}_best.weights.h5"
        global_best = _min_val_loss(rows) if best_path.is_file() else None
        stage_best = _min_val_loss(stage_rows) if stage_best_path.is_file() else None
        last_epoch = epoch_offset + stage_cfg.epochs

        if stage_cfg.epochs > 0 and start_epoch < last_epoch:
            with plan.scope():
                _check_backup(built, backup_dir)
            log.info(
                "stage %d: %s, lr %g, %d trainable weight tensors, epochs %d..%d%s",
                stage,
                "heads only (backbone frozen)" if stage == 1 else f"fine-tuning ({stage_cfg.unfreeze})",
                lr,
                trainable,
                start_epoch + 1,
                last_epoch,
                " (resumed from backup)" if resume_epoch is not None else "",
            )
            callbacks: list[keras.callbacks.Callback] = [
                EpochStats(stage, train_images, cfg.data.batch_size),
                ResumableEarlyStopping(
                    [r.get("val_loss") for r in stage_rows],
                    monitor="val_loss",
                    patience=cfg.training.early_stopping_patience,
                    restore_best_weights=True,
                ),
                keras.callbacks.ModelCheckpoint(
                    str(best_path),
                    monitor="val_loss",
                    save_best_only=True,
                    initial_value_threshold=global_best,
                ),
                keras.callbacks.ModelCheckpoint(
                    str(stage_best_path),
                    monitor="val_loss",
                    save_best_only=True,
                    save_weights_only=True,
                    initial_value_threshold=stage_best,
                ),
                keras.callbacks.BackupAndRestore(str(backup_dir)),
                AlignedCSVLogger(str(history_path), append=True),
                *extra_callbacks,
            ]
            keras.utils.set_random_seed(cfg.seed + stage)
            built.model._initial_epoch = None  # BackupAndRestore of an earlier stage must not leak in
            built.model.fit(
                train_batches,
                validation_data=val_batches,
                initial_epoch=epoch_offset,
                epochs=last_epoch,
                callbacks=callbacks,
                shuffle=False,  # the batches shuffle themselves (tf.data / PyDataset)
                verbose=verbose,
            )
            built.model._initial_epoch = None
            if stage_best_path.is_file():
                _load_model_weights(built, stage_best_path)

        built.model.save_weights(str(final_weights))
        rows = read_history(history_path)
        stage_rows = [r for r in rows if r.get("stage") == stage]
        summary = _stage_summary(stage, stage_cfg, stage_rows, trainable, epoch_offset)
        record["completed"] = [s for s in record["completed"] if int(s["stage"]) != stage] + [summary]
        record["devices"] = plan.as_dict()
        _write_json(stages_path, record)
        done[stage] = summary
        epoch_offset = int(summary["next_epoch"])
        log.info(
            "stage %d finished: %d epochs, best val_loss %s%s",
            stage,
            summary["epochs_run"],
            summary["best_val_loss"],
            ", stopped early" if summary["stopped_early"] else "",
        )

    if not best_path.is_file():  # no epoch at all (both stages 0 epochs): keep the model as is
        built.model.save(str(best_path))
    _load_best(built, best_path)
    history = read_history(history_path)
    epoch_seconds, images_per_s = throughput(history)
    return FitResult(
        history=history,
        stages=sorted(record["completed"], key=lambda s: int(s["stage"])),
        best_val_loss=_min_val_loss(history),
        best_checkpoint=best_path,
        seconds=epoch_seconds if history else time.perf_counter() - started,
        images_per_s=images_per_s,
        devices=plan.as_dict(),
        resumed=resumed,
    )


def _load_model_weights(built: BuiltModel, path: Path) -> None:
    """Load a .weights.h5 written by this run (same architecture; optimizer state may differ)."""
    try:
        built.model.load_weights(str(path), skip_mismatch=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FitError(f"{path}: cannot load into this model ({first}); the config changed?") from None


def _load_best(built: BuiltModel, best_path: Path) -> None:
    """Copy the best checkpoint's weights into the model (variable order does not depend on trainable)."""
    from train.model import load_trained

    best = load_trained(best_path)
    built.model.set_weights(best.get_weights())


def throughput(rows: Sequence[dict[str, Any]]) -> tuple[float, float | None]:
    """(seconds, images/s) of these epochs: wall seconds summed, and all images trained over all
    training seconds (validation excluded).

    Why not the mean of each epoch's rate: the first epoch (graph tracing, caches filling) is slow
    and short ones are fast, so the mean of rates said 99 images/s where 56 were measured (issue 25).
    The sums also cover every session of a resumed run, not only the last one's few seconds.
    """
    seconds = sum(v for v in (_finite(r.get("seconds")) for r in rows) if v is not None)
    pairs = [(_finite(r.get("images")), _finite(r.get("train_seconds"))) for r in rows]
    images = sum(i for i, t in pairs if i is not None and t is not None)
    train_s = sum(t for i, t in pairs if i is not None and t is not None)
    return seconds, (images / train_s if train_s > 0 else None)


def _stage_summary(
    stage: int, stage_cfg: Any, rows: Sequence[dict[str, Any]], trainable: int, first_epoch: int
) -> dict[str, Any]:
    epochs = [int(r["epoch"]) for r in rows]
    best = _min_val_loss(rows)
    best_epoch = next((int(r["epoch"]) for r in rows if _finite(r.get("val_loss")) == best), None)
    seconds, images_per_s = throughput(rows)
    summary: dict[str, Any] = {
        "stage": stage,
        "learning_rate": stage_cfg.learning_rate,
        "epochs_planned": stage_cfg.epochs,
        "epochs_run": len(rows),
        "first_epoch": min(epochs) if epochs else None,
        "last_epoch": max(epochs) if epochs else None,
        "next_epoch": (max(epochs) + 1) if epochs else first_epoch,
        "best_val_loss": best,
        "best_epoch": best_epoch,
        "stopped_early": len(rows) < stage_cfg.epochs,
        "trainable_weight_tensors": trainable,
        "seconds": round(seconds, 3),
        "images_per_s": round(images_per_s, 2) if images_per_s is not None else None,
    }
    if stage == 2:
        summary["unfreeze"] = stage_cfg.unfreeze
        summary["unfreeze_layers"] = stage_cfg.unfreeze_layers
    return summary
