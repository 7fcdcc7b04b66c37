"""Counts on real frames, against the hand annotation in bench/real/ (see bench/real/METHOD.md).

Runs the trap as a new user would set it up for a light trap (examples/light-trap.yaml: its
detector, crop and tracker settings; the shared iNaturalist model as the classifier) over each
annotated set of real frames in ../shared/data, through `trapcam evaluate`'s own code, and prints
per size class what an ecologist asks of the counts: how many insects were there, how many the
trap found, which it counted twice, which it missed, and how many tracks match no insect.

    python -m bench.real_counts --shared ../shared
    python -m bench.real_counts --shared ../shared --iou 0.3 --out /tmp/real   # keep the reports
    python -m bench.real_counts --shared ../shared --set flower-pi               # one set

The frames are never copied into the repository; a missing ../shared is one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "bench" / "real"
INAT = Path("data/models/inat-insect-mobilenet-v2")


@dataclass(frozen=True)
class RealSet:
    """One annotated sequence: its annotation file and where its frames are under ../shared."""

    name: str
    annotation: Path
    images: Path  # relative to the shared folder
    example: str  # the example config whose detector/tracker a user of this camera would start from
    detector: dict[str, Any] = field(default_factory=dict)  # what a user adds for this camera


SETS = (
    RealSet(
        "ami-sequential",
        REAL / "ami-sequential.coco.json",
        Path("data/ami-trap-frames/sequential"),
        "light-trap.yaml",
        # the camera burns its date and time into the bottom-right corner of every frame
        {"mask": [{"name": "timestamp", "rect": [4010, 2130, 4096, 2160]}]},
    ),
    RealSet(
        "ami-sequential-timelapse",
        REAL / "ami-sequential.coco.json",
        Path("data/ami-trap-frames/sequential"),
        "timelapse-trap.yaml",
        {"mask": [{"name": "timestamp", "rect": [4010, 2130, 4096, 2160]}]},
    ),
    RealSet(
        "ami-vermont-snapshot",
        REAL / "ami-vermont-snapshot.coco.json",
        Path("data/ami-trap-frames/vermont"),
        "timelapse-trap.yaml",
        # the timestamp, and the scale bar the trap's team laid on the sheet (a fixed object, like a frame)
        {
            "mask": [
                {"name": "timestamp", "rect": [4010, 2130, 4096, 2160]},
                {"name": "scale bar", "rect": [1670, 840, 2000, 950]},
            ]
        },
    ),
    RealSet(
        "ami-vermont-snapshot-sheet",
        REAL / "ami-vermont-snapshot.coco.json",
        Path("data/ami-trap-frames/vermont"),
        "timelapse-trap.yaml",
        # no scale-bar mask: the trap's own empty sheet (snapshot 01 at lamp-on, 20:04 the next
        # evening, camera not moved) shows the bar and the sheet's marks, so none of them counts
        {
            "mask": [{"name": "timestamp", "rect": [4010, 2130, 4096, 2160]}],
            "sheet_reference": "{shared}/data/ami-trap-frames/vermont/20220622200400-01-snapshot.jpg",
        },
    ),
    RealSet(
        "ami-panama-snapshot",
        REAL / "ami-panama-snapshot.coco.json",
        Path("data/ami-trap-frames/panama"),
        "timelapse-trap.yaml",
        {"mask": [{"name": "timestamp", "rect": [4010, 2130, 4096, 2160]}]},
    ),
    RealSet(
        "flower-pi",
        REAL / "flower-pi.coco.json",
        Path("data/flower-pi-frames"),
        "flower-camera.yaml",
    ),
)


class BenchError(Exception):
    """The bench cannot run: a missing folder or file, named in one line."""


def trap_config(
    example: str,
    shared: Path,
    data_dir: Path,
    detector: dict[str, Any] | None = None,
    model: Path | None = None,
) -> str:
    """The example's detector, crop, classifier and tracker settings; the iNat model (or `model`, a
    trapcam bundle); nothing else.

    Device parts (camera, schedule, light, MQTT, export folders) are left out: evaluation reads
    the frames itself, and a schedule would drop frames outside its window.
    """
    raw: dict[str, Any] = yaml.safe_load((REPO / "examples" / example).read_text(encoding="utf-8"))
    model_dir = shared / INAT
    if not model_dir.is_dir():
        raise BenchError(f"{model_dir}: the shared iNaturalist model is not there")
    classifier: dict[str, Any] = {
        **{k: v for k, v in raw.get("classifier", {}).items() if k not in ("model", "labels")},
        "model": str(model_dir / "mobilenet_v2_1.0_224_inat_insect_quant.tflite"),
        "labels": str(model_dir / "inat_insect_labels.txt"),
        "num_threads": 2,
    }
    if model is not None:  # a trapcam bundle: its own labels, thresholds and open set
        classifier["model"] = str(model)
        del classifier["labels"]
    config: dict[str, Any] = {
        "device_id": f"real-{Path(example).stem}",
        "data_dir": str(data_dir),
        "source": {"kind": "folder", "path": str(data_dir)},
        "classifier": classifier,
    }
    for section in ("detector", "crop", "tracker"):
        if section in raw:
            config[section] = raw[section]
    config["detector"] = {**config.get("detector", {}), **(detector or {})}
    if isinstance(config["detector"].get("sheet_reference"), str):
        config["detector"]["sheet_reference"] = config["detector"]["sheet_reference"].format(shared=shared)
    if config["detector"].get("sheet_reference") == "lamp_on":
        # these frames are from the middle of a night: none shows the sheet when the lamp went on
        # (and there is no schedule here), so the run starts as a trap without a reference does
        del config["detector"]["sheet_reference"]
    return yaml.safe_dump(config, sort_keys=False)


def size_classes(annotation: Path) -> dict[int, str]:
    """Insect id -> size class, from the annotation's `insects` list."""
    import json

    data = json.loads(annotation.read_text(encoding="utf-8"))
    return {int(i["track_id"]): str(i["size_class"]) for i in data.get("insects", [])}


def rows(
    sizes: Mapping[int, str], gt_to_tracks: Mapping[int, Sequence[int]]
) -> list[tuple[str, int, int, int, int]]:
    """(size class, true, found, counted twice or more, missed) for each class and for all."""
    out = []
    for name in ("large", "small", "all"):
        ids = [i for i, s in sizes.items() if name == "all" or s == name]
        found = sum(1 for i in ids if gt_to_tracks.get(i))
        double = sum(1 for i in ids if len(gt_to_tracks.get(i, ())) > 1)
        out.append((name, len(ids), found, double, len(ids) - found))
    return out


def run_set(
    real: RealSet, shared: Path, out: Path, iou: float, keep: bool, model: Path | None = None
) -> list[str]:
    """Evaluate one set; the printed lines."""
    from edge.config import parse_config
    from edge.evaluation.ground_truth import load_ground_truth
    from edge.evaluation.run import evaluate_frames, isolated_config

    images = shared / real.images
    if not images.is_dir():
        raise BenchError(f"{images}: the frames of {real.name} are not there")
    truth = load_ground_truth(real.annotation, "coco", images=images)
    folder = out / real.name
    folder.mkdir(parents=True, exist_ok=True)
    text = trap_config(real.example, shared, folder, real.detector, model)
    (folder / "trap.yaml").write_text(text, encoding="utf-8")
    cfg = isolated_config(parse_config(text, str(folder / "trap.yaml")), folder)
    report, result = evaluate_frames(cfg, truth, iou_threshold=iou)
    report.write(folder)
    tracking = report.tracking
    if tracking is None:
        raise BenchError(f"{real.name}: the evaluation has no tracking figures")
    sizes = size_classes(real.annotation)
    excess = (tracking.false_tracks + tracking.extra_tracks) / max(tracking.true_count, 1)
    lines = [
        f"{real.name}: {len(truth.frames)} frames, {truth.box_count} boxes; config examples/{real.example} "
        f"(detector {cfg.detector.kind}), IoU {iou:g}",
        f"  {'size':6s} {'true':>5s} {'found':>6s} {'twice+':>7s} {'missed':>7s}",
    ]
    for name, true, found, double, missed in rows(sizes, tracking.gt_to_tracks):
        lines.append(f"  {name:6s} {true:5d} {found:6d} {double:7d} {missed:7d}")
    lines.append(
        f"  counted {tracking.counted} tracks for {tracking.true_count} insects; false tracks "
        f"{tracking.false_tracks}, extra tracks on double-counted insects {tracking.extra_tracks}; "
        f"(false + extra) / true = {excess:.0%}"
    )
    lines.append(
        f"  not counted: {result.partial_tracks} partial (slivers at the frame's border), "
        f"{result.not_insects} voted not an insect"
    )
    answers = result.counts()
    unknown, unsure = answers.get("unknown", 0), answers.get("unsure", 0)
    lines.append(
        f"  answers of the {sum(answers.values())} counted: {sum(answers.values()) - unknown - unsure} named,"
        f" {unsure} unsure, {unknown} unknown (unlike every taxon of the model: its open set)"
    )
    if tracking.mota is not None and tracking.idf1 is not None:
        lines.append(
            f"  MOTA {tracking.mota:.3f}, IDF1 {tracking.idf1:.3f}, id switches {tracking.id_switches}"
        )
    if keep:
        lines.append(f"  reports: {folder}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(REPO.parent / "shared"), help="the shared folder (../shared)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU a box needs to match an annotation")
    parser.add_argument("--out", help="keep the reports and databases here (default: a temporary folder)")
    parser.add_argument(
        "--model",
        help="a trapcam bundle instead of the iNat model (e.g. the demo's: how many tracks of a night"
        " of insects it never saw its open set calls unknown)",
    )
    parser.add_argument(
        "--set",
        action="append",
        choices=[real.name for real in SETS],
        help="only this set (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    chosen = [real for real in SETS if not args.set or real.name in args.set]
    shared = Path(args.shared).expanduser().resolve()
    try:
        if not shared.is_dir():
            raise BenchError(f"--shared {shared}: not a folder; expected the shared folder with data/")
        with tempfile.TemporaryDirectory(prefix="trapcam-real-") as tmp:
            out = Path(args.out) if args.out else Path(tmp)
            for real in chosen:
                model = Path(args.model).expanduser().resolve() if args.model else None
                lines = run_set(real, shared, out, args.iou, keep=bool(args.out), model=model)
                print("\n".join(lines), flush=True)
    except BenchError as exc:
        print(f"real_counts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
