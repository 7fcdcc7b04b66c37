"""`trapcam demo` end to end, judged by the content of what it wrote.

One real run of the command in a process of its own, as a newcomer runs it: synthetic crops, the
demo's model trained here with TensorFlow on the CPU at the demo's default settings, an int8 bundle
held to convert's default bar (1 pp, 99%), a rendered night (shorter than the default: the night
does not change the model), the device loop with a real mosquitto broker, exports, plots and the
evaluation. Every figure it prints is checked against the files and the database.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import query

from convert.edgetpu import edgetpu_report
from demo.options import DemoError, DemoOptions, broker_address
from demo.run import MARKER, prepare_folder
from edge.classify.bundle import load_bundle, sha256_file
from edge.cli import main
from edge.errors import ConfigError
from edge.export import validate_camtrap_dp
from edge.synth.species import SPECIES

ROOT = Path(__file__).resolve().parents[1]
# What the int8 model must keep at every level, with margin over the bar of 0.99 (issue: the demo
# failed on another CPU at 0.981 when its model had none).
MARGIN_AGREEMENT = 0.995
# Native log lines that must not reach a newcomer's screen (they go to OUT/native.log).
NOISE = ("oneDNN", "absl", "I0000", "cpu_feature_guard", "XNNPACK", "fully_quantize", "TF_ENABLE_ONEDNN")

# The demo runs once per session (tests/conftest.py `demo_run`, about 3 minutes on two cores); the
# module's first test pays for it unless the convert tests already did.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _files(stdout: str) -> dict[str, Path]:
    """The 'files:' block the demo prints: name -> path."""
    block = stdout.split("\nfiles:\n", 1)[1].split("\n\n", 1)[0]
    out = {}
    for line in block.splitlines():
        name, path = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        out[name] = Path(path)
    return out


def _truth(out: Path) -> dict[int, str]:
    """Ground-truth insect id -> species, from the night the demo rendered."""
    with (out / "night" / "ground_truth.csv").open() as fh:
        return {int(r["insect_id"]): r["species"] for r in csv.DictReader(fh)}


def test_demo_runs_every_step_and_lists_files_that_exist(demo_run: dict[str, Any]) -> None:
    assert demo_run["code"] == 0
    stdout = demo_run["stdout"]
    for n in range(1, 7):
        assert f"[{n}/6]" in stdout
    files = _files(stdout)
    assert len(files) >= 12
    missing = [f"{k}: {p}" for k, p in files.items() if not p.exists()]
    assert missing == []
    assert (demo_run["out"] / MARKER).is_file()


def test_the_screen_holds_the_demo_and_not_the_libraries_log_lines(demo_run: dict[str, Any]) -> None:
    """TensorFlow's, absl's, oneDNN's and the converter's own lines went to native.log, not to the
    terminal; the run's numerics were pinned (oneDNN off, two threads, op determinism)."""
    screen = demo_run["stdout"] + demo_run["stderr"]
    noisy = [line for line in screen.splitlines() if any(word in line for word in NOISE)]
    assert noisy == []
    assert (demo_run["out"] / "native.log").is_file()
    run = json.loads((demo_run["out"] / "train" / "run.json").read_text())
    assert run["numerics"] == {"onednn": "0", "op_determinism": True, "threads": 2}


def test_bundle_is_checked_int8_and_is_what_the_trap_ran(demo_run: dict[str, Any]) -> None:
    out, db = demo_run["out"], demo_run["db"]
    bundle = load_bundle(out / "bundle")
    assert [h.level for h in bundle.manifest.outputs] == ["order", "family", "species"]
    assert bundle.manifest.outputs[-1].labels == sorted(s.name for s in SPECIES)  # all the night can bring
    manifest = json.loads((out / "bundle" / "model.json").read_text())
    assert manifest["input"]["dtype"] == "uint8"
    validation = manifest["validation"]
    assert validation["passed"] and validation["gated_variant"] == "int8"
    assert validation["verdict"] == "passed" and validation["measurable"] is True
    assert (validation["budget_pp"], validation["min_agreement"]) == (1.0, 0.99)  # convert's default bar
    # a thousand crops and more: one crop is 0.1 pp or less, far below the budget
    assert validation["images"] >= 1000 and validation["resolution_pp"] <= 0.1
    int8 = validation["variants"]["int8"]["levels"]
    keras = validation["keras"]
    assert set(int8) == {"order", "family", "species"}
    for level, figures in int8.items():
        assert figures["agreement"] >= MARGIN_AGREEMENT, (level, figures["agreement"])
        assert keras[level]["accuracy"] - figures["accuracy"] <= 0.01 + 1e-9
    (sha,) = query(db, "SELECT model_sha256 FROM runs")[0]
    assert sha == sha256_file(out / "bundle" / "model.tflite")
    # the demo's small_cnn is plain conv-BN-ReLU: its int8 file would map whole onto a Coral
    report = edgetpu_report(out / "bundle" / "model.tflite")
    assert report.unsupported == {} and report.all_int8, report.ops
    assert report.ops["CONV_2D"] == 5 and report.ops["MAX_POOL_2D"] == 4


def test_counts_match_ground_truth_database_exports_and_broker(demo_run: dict[str, Any]) -> None:
    out, db, stdout = demo_run["out"], demo_run["db"], demo_run["stdout"]
    truth = _truth(out)
    report = json.loads((out / "evaluation" / "report.json").read_text())
    tracking = report["tracking"]
    ended = query(db, "SELECT track_id, label, level FROM tracks WHERE status = 'ended'")
    assert tracking["true_insects"] == len(truth) == 8
    assert tracking["counted"] == len(ended)
    assert abs(tracking["counted"] - len(truth)) <= 1  # the counting bar, at 8 insects
    assert tracking["double_counted"] == 0
    assert f"counted {len(ended)} insects, {len(truth)} were there" in stdout

    # The species table printed and in the JSON: true counts are the ground truth's.
    rows = {r["label"]: r for r in report["counts_per_taxon"]["levels"]["species"]}
    for species, n in Counter(truth.values()).items():
        assert rows[species]["true"] == n
        assert re.search(rf"^\s+{re.escape(species)}\s+{n}\s+{rows[species]['counted']}\s", stdout, re.M)
    assert sum(r["counted"] for r in rows.values()) == len(ended)

    # Daily CSV: its "all" row is the database's finished tracks, and its species rows add up to the
    # tracks named at species level (the rest are named higher up, or unsure).
    (counts_file,) = sorted((out / "trap" / "export").rglob("counts_*.csv"))
    with counts_file.open() as fh:
        rows_csv = list(csv.DictReader(fh))
    (all_row,) = [r for r in rows_csv if r["level"] == "all"]
    assert int(all_row["count"]) == len(ended)
    species_total = sum(int(r["count"]) for r in rows_csv if r["level"] == "species")
    assert species_total == sum(1 for r in ended if r[2] == "species") > 0

    # Camtrap DP: valid, one observation per counted insect.
    (package,) = [p.parent for p in (out / "trap" / "export").rglob("datapackage.json")]
    assert validate_camtrap_dp(package) == []
    with (package / "observations.csv").open() as fh:
        observations = [r for r in csv.DictReader(fh) if r["observationLevel"] == "event"]
    assert len(observations) == len(ended)

    # MQTT: every counted track arrived at the broker.
    published = {m["track_id"] for m in demo_run["published"]}
    assert published >= {r[0] for r in ended}


def test_report_and_evaluation_files_hold_the_night(demo_run: dict[str, Any]) -> None:
    out = demo_run["out"]
    report_dir = out / "trap" / "report"
    html = (report_dir / "report.html").read_text()
    assert "<title>Insect report - demo-trap, " in html
    pngs = sorted(report_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["activity_per_hour.png", "counts_per_night.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with (report_dir / "taxa.csv").open() as fh:
        taxa_total = sum(int(r["count"]) for r in csv.DictReader(fh))
    ended = query(demo_run["db"], "SELECT COUNT(*) FROM tracks WHERE status = 'ended'")[0][0]
    assert taxa_total == ended
    md = (out / "evaluation" / "report.md").read_text()
    assert "MOTA" in md and "precision" in md.lower()
    levels = json.loads((out / "evaluation" / "report.json").read_text())["classification"]["levels"]
    assert set(levels) == {"order", "family", "species"}
    assert all(v["tracks"]["n"] > 0 for v in levels.values())


def test_trap_config_written_by_the_demo_validates(demo_run: dict[str, Any]) -> None:
    config = demo_run["out"] / "trap.yaml"
    assert main(["validate-config", str(config)]) == 0


# ---------------------------------------------------------------- cheap checks, no training


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "field-data.csv").write_text("precious\n")
    with pytest.raises(DemoError, match=r"not empty and not an earlier demo's folder"):
        prepare_folder(tmp_path)
    assert (tmp_path / "field-data.csv").read_text() == "precious\n"
    earlier = tmp_path / "earlier"
    (earlier / "night").mkdir(parents=True)
    (earlier / MARKER).write_text("{}")
    (earlier / "notes.txt").write_text("mine\n")
    with pytest.raises(DemoError, match=r"'notes.txt', which the demo did not write"):
        prepare_folder(earlier)
    assert (earlier / "notes.txt").exists() and (earlier / "night").is_dir()
    (earlier / "notes.txt").unlink()
    prepare_folder(earlier)  # an earlier demo's own parts are replaced
    assert list(earlier.iterdir()) == []


def test_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert broker_address("example.org") == ("example.org", 1883)
    assert broker_address("10.0.0.2:1884") == ("10.0.0.2", 1884)
    for bad in ("host:99999", ":1883", "host:port"):
        with pytest.raises(ConfigError, match="--broker"):
            broker_address(bad)
    with pytest.raises(ConfigError, match=r"--frames 5: expected at least 20"):
        DemoOptions(frames=5).check()
    assert main(["demo", "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "trapcam: error: --epochs 0: expected at least 1"
    assert main(["demo", "--min-agreement", "99"]) == 2
    assert capsys.readouterr().err.strip().endswith("--min-agreement 99.0: expected a fraction in 0..1")
    assert main(["demo", "--species", "Noctua pronuba,Vanessa cardui"]) == 2
    assert "unknown synthetic species 'Vanessa cardui'" in capsys.readouterr().err
