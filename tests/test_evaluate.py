"""`trapcam evaluate`: the trap's own pipeline measured on annotated frames, in three formats.

Real parts throughout: a synthetic night written to disk by `edge.synth`, COCO and MOT files that
this test writes from that night's ground truth, the static-screen detector, the tracker, SQLite,
and a real TFLite model from `modelkit` for the classification scores. Figures that are known by
construction (a hand-drawn case, a deliberately wrong label) are checked exactly.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import query, synthetic_config

from edge.cli import main
from edge.evaluation.counting import EvaluationError
from edge.evaluation.ground_truth import GroundTruth, load_ground_truth
from edge.evaluation.run import evaluate_frames
from edge.synth.scene import SceneParams, SyntheticNight
from edge.synth.writer import write_night

SEED, FRAMES, INSECTS, INTERVAL_S = 5, 120, 8, 5.0
START = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)


# ---------------------------------------------------------------- writing ground truth in other formats


def write_coco(truth: GroundTruth, path: Path, *, track_ids: bool = True, times: bool = True) -> Path:
    """The same frames and insects as a COCO file (image ids and file order deliberately scrambled)."""
    names = sorted({tuple(o.taxa.items()) for f in truth.frames for o in f.objects})
    category = {taxa: k + 1 for k, taxa in enumerate(names)}
    images, annotations = [], []
    for f in reversed(truth.frames):
        image = {"id": 1000 + f.index, "file_name": f.path.name, "frame_index": f.index}
        if times:
            image["date_captured"] = f.timestamp.isoformat()
        images.append(image)
        for o in f.objects:
            b = o.box
            ann = {
                "id": len(annotations) + 1,
                "image_id": 1000 + f.index,
                "bbox": [b.x0, b.y0, b.width, b.height],
                "category_id": category[tuple(o.taxa.items())],
            }
            if track_ids:
                ann["track_id"] = o.insect_id
            annotations.append(ann)
    categories = [
        {"id": k, "name": dict(taxa)["species"], "order": dict(taxa)["order"], "family": dict(taxa)["family"]}
        for taxa, k in category.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_mot(truth: GroundTruth, seq: Path) -> tuple[Path, Path]:
    """A MOT Challenge sequence (img1/ symlinks, gt/gt.txt, seqinfo.ini) and its labels.txt."""
    species = sorted({o.taxa["species"] for f in truth.frames for o in f.objects})
    (seq / "img1").mkdir(parents=True)
    (seq / "gt").mkdir()
    rows = []
    for f in truth.frames:
        (seq / "img1" / f"{f.index + 1:06d}.jpg").symlink_to(f.path)
        for o in f.objects:
            b = o.box
            cls = species.index(o.taxa["species"]) + 1
            rows.append(f"{f.index + 1},{o.insect_id},{b.x0},{b.y0},{b.width},{b.height},1,{cls},1.0")
    rows.append("3,999,5,5,40,40,0,1,1.0")  # conf 0: an "ignore" region by MOT convention, not an insect
    (seq / "gt" / "gt.txt").write_text("\n".join(rows) + "\n")
    (seq / "seqinfo.ini").write_text(
        f"[Sequence]\nname=night\nimDir=img1\nframeRate={1 / INTERVAL_S}\nseqLength={len(truth.frames)}\n"
        "imWidth=1280\nimHeight=720\nimExt=.jpg\n"
    )
    labels = seq.parent / "labels.txt"
    labels.write_text("\n".join(species) + "\n")
    return seq, labels


def _objects(truth: GroundTruth, levels: tuple[str, ...]) -> list[tuple]:
    return [
        (
            f.index,
            f.timestamp,
            sorted((o.insect_id, tuple(o.taxa.get(lv) for lv in levels), o.box) for o in f.objects),
        )
        for f in truth.frames
    ]


def _figures(doc: dict) -> dict:
    d, t = doc["detection"], doc["tracking"]
    keys = (
        "true_insects",
        "counted",
        "count_error",
        "double_counted",
        "missed",
        "false_tracks",
        "id_switches",
    )
    return {
        "detection": (d["truth_boxes"], d["detections"], d["tp"], d["fp"], d["fn"]),
        "tracking": (*(t[k] for k in keys), round(t["mota"], 9), round(t["idf1"], 9)),
        "species": {r["label"]: r["true"] for r in doc["counts_per_taxon"]["levels"]["species"]},
    }


# ---------------------------------------------------------------- the synthetic night, through the CLI


@pytest.fixture(scope="module")
def night_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = SceneParams(width=1280, height=720, frames=FRAMES, insects=INSECTS, seed=SEED, start=START)
    return write_night(SyntheticNight(params), tmp_path_factory.mktemp("night") / "frames")


@pytest.fixture(scope="module")
def cli_run(night_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`trapcam evaluate` on the synthetic night, once for the module."""
    tmp = tmp_path_factory.mktemp("cli")
    data_dir = tmp / "trapdata"
    config = tmp / "trap.yaml"
    config.write_text(f"data_dir: {data_dir}\nsource: {{kind: synthetic}}\n")
    out = tmp / "evaluation"
    (out).mkdir()
    (out / "evaluate.db").write_bytes(b"an old evaluation, replaced by a fresh database")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["evaluate", str(night_dir), "--config", str(config), "--out", str(out)])
    return {
        "rc": rc,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "out": out,
        "data_dir": data_dir,
    }


def test_cli_reports_the_synthetic_night_and_leaves_the_trap_data_alone(cli_run: dict) -> None:
    assert cli_run["rc"] == 0, cli_run["stderr"]
    out: Path = cli_run["out"]
    md, doc = (out / "report.md").read_text(), json.loads((out / "report.json").read_text())
    sys.__stdout__.write("\n" + md + "\n")  # the report, for whoever runs pytest -s
    assert cli_run["stdout"].startswith(md) and f"report: {out / 'report.md'}" in cli_run["stdout"]
    assert not cli_run["data_dir"].exists()  # the trap's own database (and crops) were never created
    assert not (out / "crops").exists()

    assert doc["ground_truth"] | {"source": None} == {
        "source": None,
        "format": "synthetic",
        "frames": FRAMES,
        "boxes": doc["ground_truth"]["boxes"],
        "insects": INSECTS,
        "levels": ["order", "family", "species"],
        "has_ids": True,
        "clock": "filename",
    }
    assert doc["run"]["frames_processed"] == FRAMES and doc["run"]["exit_reason"] == "end-of-source"
    # what the run left uncounted is reported, and it matches the evaluation's own database
    partial = query(out / "evaluate.db", "SELECT COUNT(*) FROM tracks WHERE discard_reason = 'partial'")[0][0]
    assert doc["run"]["not_counted_partial"] == partial and doc["run"]["not_counted_not_insect"] == 0
    assert f"| not counted | {partial} partial" in md
    d, t = doc["detection"], doc["tracking"]
    assert d["tp"] + d["fn"] == doc["ground_truth"]["boxes"] and d["tp"] + d["fp"] == d["detections"]
    assert d["recall"] >= 0.95 and d["precision"] >= 0.95
    assert t["available"] and t["true_insects"] == INSECTS
    assert abs(t["count_error"]) <= 0.05 and t["double_counted"] == 0
    assert t["mota"] >= 0.9 and t["idf1"] >= 0.9
    night = SyntheticNight(SceneParams(frames=FRAMES, insects=INSECTS, seed=SEED, start=START))
    species = {
        r["label"]: r["true"] for r in doc["counts_per_taxon"]["levels"]["species"] if r["label"] != "unsure"
    }
    assert species == night.ground_truth_counts()
    assert doc["classification"] == {
        "available": False,
        "reason": doc["classification"]["reason"],
        "levels": {},
    }
    # The Markdown carries the same figures.
    assert (
        f"| {d['frames']} | {d['truth_boxes']} | {d['detections']} | {d['tp']} | {d['fp']} | {d['fn']} |"
        in md
    )
    assert f"| {INSECTS} | {t['counted']} |" in md and "## Classification" in md
    # The old evaluation database was replaced by this run's, which holds exactly this run.
    import sqlite3

    con = sqlite3.connect(out / "evaluate.db")
    try:
        assert con.execute("SELECT COUNT(*), MAX(frames_processed) FROM runs").fetchone() == (1, FRAMES)
    finally:
        con.close()


def test_coco_and_mot_give_the_same_figures_as_the_synthetic_format(
    cli_run: dict, night_dir: Path, tmp_path: Path
) -> None:
    synthetic = load_ground_truth(night_dir)
    night = SyntheticNight(SceneParams(frames=FRAMES, insects=INSECTS, seed=SEED, start=START))
    assert [f.timestamp for f in synthetic.frames] == [night.timestamp(i) for i in range(FRAMES)]
    assert sum(1 for f in synthetic.frames if not f.objects) > 0  # empty frames are frames too
    coco = load_ground_truth(write_coco(synthetic, tmp_path / "coco" / "night.json"), images=night_dir)
    seq, labels = write_mot(synthetic, tmp_path / "mot" / "night-01")
    mot = load_ground_truth(seq, start=START, classes=labels)
    assert (coco.fmt, mot.fmt) == ("coco", "mot")
    assert coco.levels == ("order", "family", "species") and mot.levels == ("species",)
    # The loaders read back exactly the frames, times, ids, taxa and boxes of the night.
    assert _objects(coco, coco.levels) == _objects(synthetic, coco.levels)
    assert _objects(mot, ("species",)) == _objects(synthetic, ("species",))
    assert any("conf 0" in n for n in mot.notes)

    expected = _figures(json.loads((cli_run["out"] / "report.json").read_text()))
    for truth in (coco, mot):
        cfg = synthetic_config(tmp_path / f"data-{truth.fmt}")
        report, result = evaluate_frames(cfg, truth)
        assert result.frames == FRAMES
        assert _figures(report.to_dict()) == expected, truth.fmt


# ---------------------------------------------------------------- exact figures on a hand-drawn case


def _draw(path: Path, rects: list[tuple[int, int, int, int]]) -> None:
    image = np.full((360, 640, 3), 190, np.uint8)
    for x, y, w, h in rects:
        image[y : y + h, x : x + w] = (40, 35, 30)
    assert cv2.imwrite(str(path), image)


def test_known_tp_fp_fn_on_drawn_rectangles_and_no_tracking_without_ids(tmp_path: Path) -> None:
    """Frame 0 empty; frame 1: A and B found; frame 2: A found, C annotated but not there (FN), D there but
    not annotated (FP); frame 3: A annotated 30 px off (IoU < 0.5): one FP and one FN; frame 4 is an
    unreadable file. No track ids."""
    a, b, c, d = (100, 100, 40, 30), (300, 200, 50, 40), (500, 60, 40, 40), (450, 250, 40, 30)
    drawn = [[], [a, b], [a, d], [a]]
    annotated = [[], [a, b], [a, c], [(a[0] + 30, a[1], a[2], a[3])]]
    images, annotations = [], []
    for i, (rects, boxes) in enumerate(zip(drawn, annotated, strict=True)):
        _draw(tmp_path / f"img{i}.png", rects)
        images.append({"id": i + 1, "file_name": f"img{i}.png"})
        for box in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "bbox": list(box), "category_id": 1}
            )
    (tmp_path / "img4.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated by a power cut")
    images.append({"id": 5, "file_name": "img4.png"})
    annotations.append({"id": 99, "image_id": 5, "bbox": [10, 10, 40, 30], "category_id": 1})
    coco = tmp_path / "tiny.json"
    categories = [
        {"id": 1, "name": "Noctua pronuba", "lineage": {"order": "Lepidoptera", "family": "Noctuidae"}}
    ]
    coco.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))

    truth = load_ground_truth(coco)
    assert not truth.has_ids and truth.levels == ("order", "family", "species")
    assert [f.path.name for f in truth.frames] == [f"img{i}.png" for i in range(5)]
    progress: list[int] = []
    report, _ = evaluate_frames(synthetic_config(tmp_path / "data"), truth, on_frame=progress.append)
    doc = report.to_dict()
    assert progress == [1, 2, 3, 4, 5]
    # The unreadable frame is skipped and said so; its annotated box is not scored.
    assert (doc["run"]["frames_unreadable"], doc["run"]["boxes_not_scored"]) == (1, 1)
    assert any("1 unreadable" in n for n in doc["notes"])
    det = doc["detection"]
    assert (det["frames"], det["truth_boxes"], det["detections"]) == (4, 5, 5)
    assert (det["tp"], det["fp"], det["fn"]) == (3, 2, 2)
    assert det["precision"] == pytest.approx(3 / 5) and det["recall"] == pytest.approx(3 / 5)
    assert det["f1"] == pytest.approx(3 / 5)
    assert det["mean_iou"] > 0.8
    tracking = doc["tracking"]
    assert tracking["available"] is False and tracking["reason"] == "the annotations have no track ids"
    assert tracking["mota"] is None and tracking["counted"] is None
    assert doc["counts_per_taxon"]["available"] is False
    md = report.to_markdown()
    assert "Not available: the annotations have no track ids" in md
    assert any("fps" in n or "frame per second" in n for n in doc["notes"])  # times were assumed: said so


# ---------------------------------------------------------------- classification with a real TFLite model


def _colour_night(
    folder: Path, colours: list[tuple[int, int, int]], frames: int = 12
) -> list[tuple[int, ...]]:
    """Squares of modelkit's species colours sitting still on grey from frame 2; returns their boxes."""
    folder.mkdir(parents=True)
    boxes = [(60 + 150 * i, 120, 60, 60) for i in range(len(colours))]
    for n in range(frames):
        image = np.full((360, 150 * len(colours) + 120, 3), 200, np.uint8)
        if n >= 2:
            for (r, g, b), (x, y, w, h) in zip(colours, boxes, strict=True):
                image[y : y + h, x : x + w] = (b, g, r)
        assert cv2.imwrite(str(folder / f"frame_{n}.png"), image)
    return boxes


def _colour_coco(path: Path, species: list[str], boxes: list[tuple[int, ...]], frames: int = 12) -> Path:
    import modelkit as mk

    names = sorted(set(species))
    categories = [
        {"id": k + 1, "name": s, "lineage": {"order": mk.SPECIES[s][2], "family": mk.SPECIES[s][1]}}
        for k, s in enumerate(names)
    ]
    images = [{"id": n, "file_name": f"frame_{n}.png", "frame_id": n} for n in range(frames)]
    annotations = [
        {
            "id": 100 * n + i,
            "image_id": n,
            "bbox": list(box),
            "category_id": names.index(s) + 1,
            "track_id": i + 1,
        }
        for n in range(2, frames)
        for i, (s, box) in enumerate(zip(species, boxes, strict=True))
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_classification_f1_per_level_and_a_wrong_label_in_the_truth(tmp_path: Path) -> None:
    import modelkit as mk  # builds its TFLite model with TensorFlow (trapcam[dev])

    from edge.config import ClassifierConfig

    bundle = mk.write_bundle(tmp_path / "bundle", mk.hierarchical_model(size=32, quant="int8", io="uint8"))
    names = ("red", "green", "blue")
    true_species = [mk.level_labels()["species"][list(mk.COLOURS).index(n)] for n in names]
    boxes = _colour_night(tmp_path / "frames", [mk.COLOURS[n] for n in names])

    def evaluate(species: list[str], tag: str) -> dict:
        coco = _colour_coco(tmp_path / "frames" / f"{tag}.json", species, boxes)
        cfg = synthetic_config(tmp_path / f"data-{tag}", "detector:\n  min_area_px: 100\n")
        cfg.classifier = ClassifierConfig(enabled=True, model=bundle, num_threads=1, threshold=0.3)
        report, result = evaluate_frames(cfg, load_ground_truth(coco, fps=0.2))
        assert len(result.confirmed_tracks) == 3
        return report.to_dict() | {"markdown": report.to_markdown()}

    right = evaluate(true_species, "right")
    assert (
        right["run"]["model"]["name"] == "colour-taxonomy-test" and len(right["run"]["model"]["sha256"]) == 64
    )
    assert right["detection"]["tp"] == 30 and right["detection"]["fp"] == 0
    levels = right["classification"]["levels"]
    assert list(levels) == ["order", "family", "species"]
    for level in levels.values():
        for view in ("crops", "tracks"):
            assert level[view]["macro_f1"] == pytest.approx(1.0) and level[view]["accuracy"] == pytest.approx(
                1.0
            )
    assert levels["species"]["crops"]["n"] == 30 and levels["species"]["tracks"]["n"] == 3
    assert "### Per class: species" in right["markdown"]

    # The blue insect annotated as its sister species (same family): only the species level suffers.
    # Truth classes at species: red (F1 1), green (F1 1), "Caerulea glauca" (never predicted: F1 0).
    wrong_species = [*true_species[:2], "Caerulea glauca"]
    assert mk.SPECIES["Caerulea glauca"][1] == mk.SPECIES[true_species[2]][1]
    wrong_doc = evaluate(wrong_species, "wrong")
    wrong = wrong_doc["classification"]["levels"]
    counts = {
        r["label"]: (r["true"], r["counted"], r["correct"])
        for r in wrong_doc["counts_per_taxon"]["levels"]["species"]
    }
    assert counts == {
        true_species[0]: (1, 1, 1),
        true_species[1]: (1, 1, 1),
        "Caerulea glauca": (1, 0, 0),
        true_species[2]: (0, 1, 0),
        "unsure": (0, 0, None),
    }
    for view in ("crops", "tracks"):
        assert wrong["species"][view]["macro_f1"] == pytest.approx(2 / 3)
        assert wrong["species"][view]["accuracy"] == pytest.approx(2 / 3)
        assert wrong["family"][view]["macro_f1"] == pytest.approx(1.0)
        assert wrong["order"][view]["macro_f1"] == pytest.approx(1.0)
    glauca = next(c for c in wrong["species"]["crops"]["per_class"] if c["label"] == "Caerulea glauca")
    assert (glauca["support"], glauca["predicted"], glauca["correct"], glauca["f1"]) == (10, 0, 0, 0.0)


def test_a_model_label_with_a_common_name_is_scored_by_its_scientific_name(tmp_path: Path) -> None:
    """A third-party model labelled like the iNaturalist one ("Genus species (Common Name)") against
    annotations that name the species: the same answer, so right (it scored 0 and said "other
    names?" on the real flower frames: "Apis mellifera" annotated, "Apis mellifera (Honey Bee)" said)."""
    import modelkit as mk  # builds its TFLite model with TensorFlow (trapcam[dev])

    from edge.config import ClassifierConfig

    model = mk.write_plain(tmp_path / "model", mk.third_party_model())
    labels = tmp_path / "model" / "labels.txt"
    labels.write_text("".join(f"{s} (Common {s.split()[0]})\n" for s in mk.SPECIES), encoding="utf-8")
    names = ("red", "green", "blue")
    species = [mk.level_labels()["species"][list(mk.COLOURS).index(n)] for n in names]
    boxes = _colour_night(tmp_path / "frames", [mk.COLOURS[n] for n in names])
    coco = _colour_coco(tmp_path / "frames" / "truth.json", species, boxes)
    cfg = synthetic_config(tmp_path / "data", "detector:\n  min_area_px: 100\n")
    cfg.classifier = ClassifierConfig(
        enabled=True, model=model, labels=labels, num_threads=1, threshold=0.3, input_range=(-1.0, 1.0)
    )
    report, result = evaluate_frames(cfg, load_ground_truth(coco, fps=0.2))
    doc = report.to_dict()
    assert {t.label for t in result.confirmed_tracks} == {f"{s} (Common {s.split()[0]})" for s in species}
    level = doc["classification"]["levels"]["species"]
    assert level["crops"]["accuracy"] == pytest.approx(1.0) and level["tracks"]["accuracy"] == pytest.approx(
        1.0
    )
    assert "other names" not in (level.get("note") or "")
    counts = {
        r["label"]: (r["true"], r["counted"], r["correct"])
        for r in doc["counts_per_taxon"]["levels"]["species"]
    }
    assert {s: counts[s] for s in species} == {s: (1, 1, 1) for s in species}


def test_classification_scores_by_hand() -> None:
    """Abstentions and labels outside the truth are wrong answers; P/R/F1 per annotated class."""
    from edge.evaluation.metrics import classification_scores

    s = classification_scores([("a", "a"), ("a", "a"), ("b", "a"), ("b", None), ("c", "c"), ("c", "x")])
    assert (s.n, s.correct, s.abstained) == (6, 3, 1)
    assert s.accuracy == pytest.approx(0.5) and s.abstained_share == pytest.approx(1 / 6)
    per = {c.label: (c.support, c.predicted, c.correct, c.precision, c.recall, c.f1) for c in s.per_class}
    assert per["a"] == pytest.approx((2, 3, 2, 2 / 3, 1.0, 0.8))
    assert per["b"] == pytest.approx((2, 0, 0, 0.0, 0.0, 0.0))
    assert per["c"] == pytest.approx((2, 1, 1, 1.0, 0.5, 2 / 3))
    assert s.macro_f1 == pytest.approx((0.8 + 0.0 + 2 / 3) / 3)


# ---------------------------------------------------------------- bad input: one line naming the file


def _cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(["evaluate", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("trapcam: error: "), err
    return lines[0]


def test_cli_bad_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "trap.yaml"
    config.write_text(f"data_dir: {tmp_path / 'trapdata'}\nsource: {{kind: synthetic}}\n")
    _draw(tmp_path / "a.png", [(10, 10, 30, 30)])
    base = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "x"}]}
    ann = {"id": 7, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 1}

    missing = tmp_path / "missing.json"
    missing.write_text(
        json.dumps(base | {"images": [{"id": 1, "file_name": "gone.png"}], "annotations": [ann]})
    )
    line = _cli_error([str(missing), "--config", str(config)], capsys)
    assert str(missing) in line and "gone.png" in line and "not found" in line

    three = tmp_path / "three.json"
    three.write_text(json.dumps(base | {"annotations": [ann | {"bbox": [10, 10, 30]}]}))
    line = _cli_error([str(three), "--config", str(config)], capsys)
    assert str(three) in line and "annotations[0] (id 7)" in line and "expected 4 numbers" in line

    unknown = tmp_path / "labels.xml"
    unknown.write_text("<annotations/>")
    line = _cli_error([str(unknown), "--config", str(config)], capsys)
    assert str(unknown) in line and "cannot tell the ground-truth format" in line
    assert not (tmp_path / "trapdata").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["annotations"][0].update(bbox=[10, 10, -5, 30]),
            "annotations[0] (id 7): bbox [10, 10, -5, 30] has a negative size",
        ),
        (lambda d: d["annotations"][0].update(category_id=9), "annotations[0] (id 7): unknown category_id 9"),
        (lambda d: d["annotations"][0].update(image_id=5), "annotations[0] (id 7): unknown image_id 5"),
        (
            lambda d: d["annotations"].append(dict(d["annotations"][0], id=8)),
            "annotations[1] (id 8): track id 3 appears twice",
        ),
        (lambda d: d.update(annotations=[]), "empty ground truth"),
        (lambda d: d.pop("images"), "'images' is missing"),
    ],
)
def test_bad_coco_records_are_named(tmp_path: Path, change: Callable[[dict], None], expected: str) -> None:
    _draw(tmp_path / "a.png", [(10, 10, 30, 30)])
    doc = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"id": 7, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 1, "track_id": 3}],
        "categories": [{"id": 1, "name": "x"}],
    }
    change(doc)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(EvaluationError) as info:
        load_ground_truth(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) and expected in message


def test_mot_rows_and_unknown_format_are_checked(tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    (seq / "img1").mkdir(parents=True)
    (seq / "gt").mkdir()
    _draw(seq / "img1" / "000001.jpg", [(10, 10, 30, 30)])
    _draw(seq / "img1" / "000002.jpg", [(10, 10, 30, 30)])
    gt = seq / "gt" / "gt.txt"
    for rows, expected in [
        ("1,1,10,10,30\n", f"{gt}:1: '1,1,10,10,30'; expected at least 6 numbers"),
        ("1,1,10,10,30,30,1,1,1\n1,1,50,10,30,30,1,1,1\n", f"{gt}:2: id 1 appears twice in frame 1"),
        ("1,1,10,10,30,30,1,1,1\n3,1,10,10,30,30,1,1,1\n", f"{gt}:2: frame 3 has no image"),
    ]:
        gt.write_text(rows)
        with pytest.raises(EvaluationError) as info:
            load_ground_truth(seq)
        assert expected in str(info.value)
    gt.write_text("1,1,10,10,30,30,1,1,1\n")
    truth = load_ground_truth(gt)  # gt.txt itself also works; 1 frame per second assumed and said so
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert truth.fmt == "mot" and truth.has_ids and [f.index for f in truth.frames] == [0, 1]
    assert [f.timestamp for f in truth.frames] == [epoch, epoch + timedelta(seconds=1)]
    assert any("frame per second" in n for n in truth.notes)
    later = load_ground_truth(gt, fps=2.0, start=START)
    assert [f.timestamp for f in later.frames] == [START, START + timedelta(seconds=0.5)]
    with pytest.raises(EvaluationError, match="unknown ground-truth format 'yolo'"):
        load_ground_truth(seq, "yolo")
    with pytest.raises(EvaluationError, match="does not apply to the synthetic format"):
        load_ground_truth(seq, "synthetic", fps=2.0)


def test_tracking_needs_motmetrics_and_says_how_to_get_it(
    night_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = load_ground_truth(night_dir)
    monkeypatch.setitem(sys.modules, "motmetrics", None)  # as if it were not installed
    with pytest.raises(EvaluationError, match=r"pip install 'trapcam\[evaluate\]'"):
        evaluate_frames(synthetic_config(tmp_path / "data"), truth)
    assert not (tmp_path / "data").exists()  # refused before running anything
