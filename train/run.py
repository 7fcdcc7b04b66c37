"""One training run, start to finish, into one run folder that is all `convert` needs.

run_dir/
  train.yaml            the validated config (snapshot)
  splits.csv            the train/validation/test manifest (with sha256 of every image)
  class_counts.csv      images per class and split
  checkpoints/best.keras, backup/, history.csv, stages.json   (written by fit)
  model.keras           the best model (raw 0-255 RGB in, one softmax output per level)
  run.json              levels, labels, taxonomy parents, input, thresholds: the bundle's contract
  backbone.weights.h5   the trained backbone alone: `model.weights` of a later run (same backbone, size)
  thresholds.json       per-class abstention thresholds per level
  report.md, report.json, confusion_<level>.csv/.png, training_curves.png, gradcam/
A killed run started again with `resume` (same data, same config: train/run_folder.py) resumes:
the split manifest is read back (the same images stay in the same split) and `fit` skips
finished stages.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from train.config import TrainConfig
from train.run_folder import (
    CONFIG_SNAPSHOT,
    SPLITS_FILE,
    check_run_folder,
    check_same_data,
    clear_untrained_run,
)

log = logging.getLogger("trapcam.train")
BACKBONE_WEIGHTS = "backbone.weights.h5"  # the trained backbone, for `model.weights` of a later run
# Keras' warnings about a one-class softmax head and its loss (a taxonomy with one order, say).
ONE_CLASS_WARNINGS = (
    r"You are using a softmax over axis -1 of a tensor of shape",
    r"In loss categorical_crossentropy, expected y_pred.shape",
)


@dataclass
class TrainSummary:
    """What a run produced, for the CLI and for tests."""

    run_dir: Path
    levels: tuple[str, ...]
    metrics: dict[str, dict[str, Any]]
    consistency: float | None
    train_seconds: float
    images_per_s: float
    files: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"run folder: {self.run_dir}"]
        lines.append(f"{'level':10s} {'accuracy':>9s} {'macro P':>8s} {'macro R':>8s} {'macro F1':>9s}")
        for level in self.levels:
            m = self.metrics[level]
            lines.append(
                f"{level:10s} {m['accuracy']:9.3f} {m['macro_precision']:8.3f} "
                f"{m['macro_recall']:8.3f} {m['macro_f1']:9.3f}"
            )
        if self.consistency is not None:
            lines.append(
                f"hierarchical consistency (species under its predicted family): {self.consistency:.3f}"
            )
        lines.append(f"training: {self.train_seconds:.0f} s, {self.images_per_s:.0f} images/s")
        lines.append(f"report: {self.files.get('report_md')}")
        return "\n".join(lines)


def _write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def train(cfg: TrainConfig, extra_callbacks: Sequence[Any] = (), resume: bool = False) -> TrainSummary:
    """Dataset -> split -> two-stage training -> evaluation and report, all under cfg.run_dir.

    extra_callbacks: Keras callbacks added to both stages (the demo draws its progress bar with one).
    resume: continue the run cfg.run_dir holds (same data, same config); without it a folder that
    holds a run is refused (train/run_folder.py).
    """
    state = check_run_folder(cfg, resume)
    if state.kind == "empty" and state.detail:
        clear_untrained_run(cfg.run_dir)
    import keras

    from train.dataset import (
        class_counts,
        load_dataset,
        read_splits,
        split_dataset,
        write_class_counts,
        write_splits,
    )
    from train.evaluate import (
        hierarchical_consistency,
        level_metrics,
        plot_history,
        predict,
        threshold_details,
        threshold_summary,
        write_confusion,
        write_thresholds,
    )
    from train.fit import configure_devices, fit_two_stage
    from train.gradcam import gradcam
    from train.inputs import load_images, make_batches, output_targets, sample_weights
    from train.model import build_model, count_params
    from train.report import write_report

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    numerics = None
    if cfg.training.deterministic and keras.backend.backend() == "tensorflow":
        from train.reproducible import pin_numerics

        numerics = pin_numerics()
        log.info("deterministic training: %s", numerics)
    keras.utils.set_random_seed(cfg.seed)

    dataset = load_dataset(cfg.data, run_dir, cfg.seed)
    levels = dataset.levels if cfg.model.heads == "hierarchical" else (cfg.model.flat_level,)
    splits_path = run_dir / SPLITS_FILE
    if state.kind != "empty":  # a resumed run keeps its split, so its data must be what it was
        now = {str(Path(s.path).absolute()): (dataset.sha256[s.path], s.species) for s in dataset.samples}
        check_same_data(run_dir, now)
        splits = read_splits(splits_path)
    else:
        splits = split_dataset(dataset, cfg.data.validation_fraction, cfg.data.test_fraction, cfg.seed)

    size = cfg.data.image_size
    started = time.perf_counter()
    x = {name: load_images(getattr(splits, name), size) for name in ("train", "validation", "test")}
    write_class_counts(class_counts(dataset, splits), run_dir / "class_counts.csv")
    y = {name: output_targets(dataset, getattr(splits, name)) for name in ("train", "validation", "test")}
    y = {name: {level: t[level] for level in levels} for name, t in y.items()}
    log.info("loaded %d images in %.1f s", sum(len(v) for v in x.values()), time.perf_counter() - started)

    num_classes = {level: len(dataset.labels[level]) for level in levels}
    for level in levels:
        if num_classes[level] == 1:
            only = dataset.labels[level][0]
            log.warning(
                "%s: every image is %s, so that head always answers %s (nothing to learn there; it is kept"
                " so that the trap counts per %s as for any model)",
                level,
                only,
                only,
                level,
            )
            for pattern in ONE_CLASS_WARNINGS:  # Keras says it at every trace; trapcam said it once
                warnings.filterwarnings("ignore", message=pattern)
    weights = sample_weights(y["train"], num_classes, cfg.training.class_weighting)
    batch = cfg.data.batch_size
    train_batches = make_batches(
        x["train"], y["train"], weights, batch, shuffle=True, seed=cfg.seed, pipeline=cfg.data.pipeline
    )
    val_batches = make_batches(
        x["validation"],
        y["validation"],
        None,
        batch,
        shuffle=False,
        seed=cfg.seed,
        pipeline=cfg.data.pipeline,
    )

    family_of_species = dataset.family_of_species() if {"family", "species"} <= set(levels) else None
    plan = configure_devices(cfg.training)  # mixed precision / MirroredStrategy before building
    built = build_model(cfg.model, cfg.augment, size, levels, num_classes, family_of_species, seed=cfg.seed)
    if state.kind == "empty":
        # Written once every image has loaded and the model is built (ImageNet weights downloaded):
        # a run that failed on a bad image or offline leaves no split and no config snapshot, so
        # nothing blocks the next run (train/run_folder.py).
        (run_dir / CONFIG_SNAPSHOT).write_text(
            yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "utf-8"
        )
        write_splits(splits, splits_path)
    fit = fit_two_stage(
        built,
        train_batches,
        val_batches,
        cfg,
        run_dir,
        levels,
        plan=plan,
        train_images=len(x["train"]),
        extra_callbacks=extra_callbacks,
    )
    model = built.model  # fit leaves the best epoch's weights (checkpoints/best.keras) in it
    model_path = run_dir / "model.keras"
    model.save(model_path)
    # The trained backbone alone, as `model.weights` of a later run takes it: train once on a large
    # set, then fine-tune on a small one from these features (the transfer path without ImageNet).
    backbone_path = run_dir / BACKBONE_WEIGHTS
    built.backbone.save_weights(str(backbone_path))

    probs_test = predict(model, x["test"], batch)  # the best epoch, as saved in model.keras
    probs_train = predict(model, x["train"], batch)
    metrics: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {"model": model_path}
    thresholds: dict[str, list[float]] = {}
    threshold_report: dict[str, dict[str, Any]] = {}
    for level in levels:
        labels = dataset.labels[level]
        metrics[level] = level_metrics(
            y["test"][level], probs_test[level], labels, top_k=cfg.evaluation.top_k
        )
        csv_path, png_path = run_dir / f"confusion_{level}.csv", run_dir / f"confusion_{level}.png"
        write_confusion(np.asarray(metrics[level]["confusion"]), labels, csv_path, png_path)
        files[f"confusion_{level}"] = png_path
        details = threshold_details(
            probs_train[level],
            y["train"][level],
            cfg.evaluation.threshold_k,
            cfg.evaluation.threshold_max,
            cfg.evaluation.threshold_min,
        )
        thresholds[level] = [float(d["threshold"]) for d in details]
        threshold_report[level] = threshold_summary(details, labels) | {"k": cfg.evaluation.threshold_k}
    consistency = None
    if len(levels) > 1:
        predicted = {level: np.argmax(probs_test[level], axis=1) for level in levels}
        consistency = hierarchical_consistency(predicted, dataset.labels, dataset.taxonomy)

    write_thresholds(run_dir / "thresholds.json", thresholds, dataset.labels, cfg.evaluation.threshold_k)
    parents = {lvl: dict(dataset.taxonomy.parents.get(lvl, {})) for lvl in levels[1:]}
    _write_json(
        run_dir / "run.json",
        {
            "format_version": 1,
            "model": "model.keras",
            "levels": list(levels),
            "labels": {level: dataset.labels[level] for level in levels},
            "taxonomy_parents": parents,
            "thresholds": thresholds,
            "input": {"height": size, "width": size, "colour_order": "RGB", "range": [0, 255]},
            "backbone": cfg.model.backbone,
            "weights": cfg.model.weights,
            "weights_origin": cfg.model.weights_origin(),
            "backbone_weights": BACKBONE_WEIGHTS,
            "seed": cfg.seed,
            "numerics": numerics,  # None: not pinned (training.deterministic false)
            "splits": "splits.csv",
        },
    )
    plot_history(run_dir / "history.csv", run_dir / "training_curves.png")
    files["curves"] = run_dir / "training_curves.png"
    level = cfg.evaluation.gradcam_level or levels[-1]
    if cfg.evaluation.gradcam_samples > 0 and len(x["test"]) and level in levels:
        gradcam(
            model,
            x["test"],
            level,
            run_dir / "gradcam",
            cfg.evaluation.gradcam_samples,
            labels=dataset.labels[level],
            truth=y["test"][level],
            probs=probs_test[level],
        )

    train_seconds = fit.seconds
    images_per_s = fit.images_per_s or 0.0
    report = {
        "run_dir": str(run_dir),
        "levels": list(levels),
        "metrics": metrics,
        "hierarchical_consistency": consistency,
        "thresholds": threshold_report,
        "parameters": count_params(model),
        "training": {
            "seconds": train_seconds,
            "images_per_s": images_per_s,
            "resumed": fit.resumed,
            "devices": fit.devices,
            "stages": fit.stages,
            "epochs": fit.history,
        },
        "dataset": {name: len(getattr(splits, name)) for name in ("train", "validation", "test")},
        "config": cfg.model_dump(mode="json"),
    }
    md_path, json_path = write_report(run_dir, report)
    files.update(report_md=md_path, report_json=json_path)
    return TrainSummary(run_dir, levels, metrics, consistency, train_seconds, images_per_s, files)
