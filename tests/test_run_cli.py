"""`trapcam` as a user runs it: a real process, real files, real signals.

Each bad input must end in one clear line on stderr and a non-zero exit, and must leave what
was already stored untouched.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import query

from edge.synth.scene import SceneParams, SyntheticNight
from edge.synth.writer import write_night

ROOT = Path(__file__).resolve().parents[1]


def trapcam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def synthetic_yaml(data_dir: Path, extra: str = "", **source: object) -> str:
    fields = {"kind": "synthetic", "width": 640, "height": 360, "frames": 40, "insects": 6} | source
    inline = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return f"data_dir: {data_dir}\nsource: {{{inline}}}\n{extra}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("trapcam: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


# ------------------------------------------------------------------ help and validation


def test_help_lists_the_subcommands() -> None:
    out = trapcam("--help")
    assert out.returncode == 0
    for command in ("run", "validate-config", "synth", "train"):
        assert command in out.stdout


def test_train_is_registered_from_the_desktop_package_and_reports_bad_input(tmp_path: Path) -> None:
    """`train` comes in through the trapcam.commands entry point; edge itself never imports it."""
    out = trapcam("train", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert "nope.yaml: training config not found" in one_error_line(out.stderr)


def test_validate_config_accepts_the_examples_and_names_a_bad_key(tmp_path: Path) -> None:
    out = trapcam("validate-config", "--config", str(ROOT / "examples" / "demo.yaml"))  # everything it opens
    assert out.returncode == 0, out.stderr
    assert "source: synthetic night" in out.stdout and "detector: static_screen ready" in out.stdout
    for name in ("light-trap.yaml", "flower-camera.yaml"):  # templates: their model is on a trap
        out = trapcam("validate-config", "--file-only", str(ROOT / "examples" / name))
        assert out.returncode == 0, out.stderr
        assert out.stdout.rstrip().endswith(": ok")
        out = trapcam("validate-config", str(ROOT / "examples" / name))
        assert out.returncode == 2 and "/opt/trapcam/models/" in one_error_line(out.stderr)
    bad = write_config(tmp_path / "bad.yaml", "source:\n  kind: synthetic\n  frmes: 10\n")
    out = trapcam("validate-config", str(bad))
    assert out.returncode == 2
    line = one_error_line(out.stderr)
    assert f"{bad}:3: source.frmes: got a key this section does not have (its value is not shown)" in line
    assert "expected no such key" in line


def test_invalid_config_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "c.yaml", synthetic_yaml(data, "detector:\n  threshold: -4\n"))
    out = trapcam("run", "--config", str(cfg))
    assert out.returncode == 2
    assert "detector.threshold: got -4" in one_error_line(out.stderr)
    assert not data.exists()


# ------------------------------------------------------------------ sources


def test_folder_replay_skips_corrupt_and_truncated_jpegs(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    frames = tmp_path / "night"
    night = SyntheticNight(
        SceneParams(
            scene="sheet",
            width=640,
            height=360,
            frames=30,
            frame_interval_s=10.0,
            insects=5,
            seed=5,
            start=datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc),
        )
    )
    write_night(night, frames, fmt="jpg")
    names = sorted(p.name for p in frames.glob("*.jpg"))
    # A garbage file and a truncated copy of a real frame, sorted among the others.
    (frames / (names[10][:-4] + "a-corrupt.jpg")).write_bytes(os.urandom(5000))
    real = (frames / names[20]).read_bytes()
    (frames / (names[20][:-4] + "a-truncated.jpg")).write_bytes(real[: len(real) // 2])

    data = tmp_path / "data"
    extra = "detector:\n  min_area_px: 60\n"
    cfg = write_config(
        tmp_path / "c.yaml",
        f"data_dir: {data}\nsource:\n  kind: folder\n  path: {frames}\n"
        "  timestamps: filename\n  filename_format: '%Y%m%d-%H%M%S'\n" + extra,
    )
    out = trapcam("run", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "corrupt" in out.stderr and "a-corrupt.jpg" in out.stderr and "a-truncated.jpg" in out.stderr
    db = data / "trapcam.db"
    assert query(db, "SELECT frames_processed, frames_corrupt, exit_reason FROM runs") == [
        (30, 2, "end-of-source")
    ]
    # Timestamps come from the file names (the night's real times), not from the clock.
    first, last = query(db, "SELECT MIN(ts_utc), MAX(ts_utc) FROM detections")[0]
    assert first >= "2026-07-01T22:00:00" and last <= "2026-07-01T22:05:00"
    counted = query(db, "SELECT COUNT(*) FROM tracks WHERE status = 'ended'")[0][0]
    assert counted == len(night.visits)


def test_source_override_and_max_frames(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "c.yaml", synthetic_yaml(data, frames=500))
    out = trapcam("run", "--config", str(cfg), "--max-frames", "12")
    assert out.returncode == 0, out.stderr
    assert query(data / "trapcam.db", "SELECT frames_processed, exit_reason FROM runs") == [
        (12, "max-frames")
    ]
    assert "frames 12" in out.stdout
    # a count of frames below one is refused at once, one line, nothing started
    for bad in ("-3", "0"):
        out = trapcam("run", "--config", str(cfg), "--max-frames", bad)
        assert out.returncode == 2 and one_error_line(out.stderr).endswith(
            f"--max-frames {bad}: expected 1 or more frames"
        )
    assert query(data / "trapcam.db", "SELECT COUNT(*) FROM runs") == [(1,)]


def test_a_replay_folder_that_is_not_there_is_a_config_error_not_a_camera_to_restart(tmp_path: Path) -> None:
    """Exit 3 is the stalled-camera code the service restarts forever; a wrong path will not fix itself."""
    nope = tmp_path / "nope"
    cfg = write_config(
        tmp_path / "c.yaml", f"data_dir: {tmp_path / 'd'}\nsource: {{kind: folder, path: {nope}}}\n"
    )
    out = trapcam("run", "--config", str(cfg))
    assert out.returncode == 2
    line = one_error_line(out.stderr)
    assert line.endswith(f"source.path {nope}: does not exist; expected the folder that holds the frames")


def test_camera_that_cannot_be_opened_exits_non_zero_for_systemd(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = write_config(
        tmp_path / "c.yaml",
        f"data_dir: {data}\nsource:\n  kind: opencv\n  device: 97\n"
        "  stall_timeout_s: 1.5\n  reopen_backoff_s: [0.1, 0.3]\n",
    )
    started = time.monotonic()
    out = trapcam("run", "--config", str(cfg), timeout=60)
    assert out.returncode == 3, out.stderr
    assert time.monotonic() - started < 30
    line = one_error_line(out.stderr)
    assert "no frame from" in line and "97" in line and "reconnecting" in line
    assert query(data / "trapcam.db", "SELECT exit_reason, frames_processed FROM runs") == [("stalled", 0)]


# ------------------------------------------------------------------ models


def test_bad_model_is_one_line_and_harms_no_stored_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    good = write_config(tmp_path / "good.yaml", synthetic_yaml(data))
    assert trapcam("run", "--config", str(good)).returncode == 0
    db = data / "trapcam.db"
    before = sha256(db)

    fake = tmp_path / "model.tflite"
    _, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    fake.write_bytes(jpeg.tobytes())
    (tmp_path / "labels.txt").write_text("a\nb\n", encoding="utf-8")
    bad = write_config(
        tmp_path / "bad.yaml", synthetic_yaml(data, f"classifier:\n  enabled: true\n  model: {fake}\n")
    )
    out = trapcam("run", "--config", str(bad))
    assert out.returncode == 2
    line = one_error_line(out.stderr)
    assert str(fake) in line and "TFLite" in line
    assert sha256(db) == before

    missing = write_config(
        tmp_path / "missing.yaml",
        synthetic_yaml(data, f"classifier:\n  enabled: true\n  model: {tmp_path / 'nope'}\n"),
    )
    out = trapcam("run", "--config", str(missing))
    assert out.returncode == 2 and "nope" in one_error_line(out.stderr)
    assert sha256(db) == before


# ------------------------------------------------------------------ lifecycle


def test_sigterm_stops_gracefully_and_ends_open_tracks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = write_config(
        tmp_path / "c.yaml",
        synthetic_yaml(
            data,
            "logging:\n  stats_interval_s: 0.5\n",
            frames=100000,
            frame_interval_s=0.05,
            realtime="true",
            insects=200,
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = data / "trapcam.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if db.exists() and query(db, "SELECT COUNT(*) FROM tracks WHERE status = 'confirmed'")[0][0] > 0:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "SIGTERM" in stderr
    assert "stats" in stderr and "fps=" in stderr and "queue=" in stderr  # the periodic structured log
    assert "main_ms_per_frame=" in stderr and "detect_ms_per_frame=" in stderr  # names that say what
    runs = query(db, "SELECT exit_reason, ended_utc IS NOT NULL FROM runs")
    assert runs == [("stopped", 1)]
    # Every open track was ended (confirmed) or discarded (tentative) and written.
    statuses = dict(query(db, "SELECT status, COUNT(*) FROM tracks GROUP BY status"))
    assert statuses.get("ended", 0) > 0
    assert "confirmed" not in statuses and "tentative" not in statuses
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert "insects counted" in stdout


def test_the_loop_never_imports_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from edge.cli import main\n"
        f"rc = main(['run', '--config', {str(write_config(tmp_path / 'c.yaml', synthetic_yaml(tmp_path)))!r},"
        " '--max-frames', '5'])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]\n"
        "assert rc == 0 and not heavy, (rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


def test_synth_command_writes_frames_with_ground_truth(tmp_path: Path) -> None:
    out = trapcam("synth", "--out", str(tmp_path / "n"), "--frames", "5", "--width", "320", "--height", "240")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "n").glob("*.jpg"))) == 5
    assert (tmp_path / "n" / "ground_truth.csv").is_file()


def test_a_run_with_a_plain_tflite_model_keeps_the_runtime_notice_off_the_screen(tmp_path: Path) -> None:
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to descriptor 2
    at the first allocation: on a trap's screen and journal it was the first line of every run."""
    from modelkit import third_party_model, write_plain

    model = write_plain(tmp_path / "model", third_party_model())
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "c.yaml", synthetic_yaml(data, f"classifier:\n  model: {model}\n  input_range: [-1, 1]\n")
    )
    out = trapcam("run", "--config", str(config), "--max-frames", "5")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "XNNPACK" not in out.stderr, out.stderr[:500]
    assert "insects counted" in out.stdout  # and the run itself still reports


def test_only_the_known_runtime_notices_are_dropped(capfd: pytest.CaptureFixture[str]) -> None:
    from edge.native_log import RUNTIME_NOTICES, without_runtime_notices

    with without_runtime_notices():
        os.write(2, f"{RUNTIME_NOTICES[0]}\n".encode())
        os.write(2, b"ERROR: something a user must see\n")
    assert capfd.readouterr().err == "ERROR: something a user must see\n"


def test_validate_config_opens_what_run_would_open(tmp_path: Path) -> None:
    """It said ok for a missing labels file, a truncated model and a missing folder; run then failed."""
    from modelkit import third_party_model, write_plain

    model = write_plain(tmp_path / "model", third_party_model())
    frames = tmp_path / "frames"
    (frames / "night-1").mkdir(parents=True)
    cv2.imwrite(str(frames / "night-1" / "a.jpg"), np.full((40, 60, 3), 200, np.uint8))

    def check(source: str, classifier: str = "") -> subprocess.CompletedProcess[str]:
        text = f"data_dir: {tmp_path / 'data'}\nsource: {source}\n{classifier}"
        return trapcam("validate-config", "--config", str(write_config(tmp_path / "c.yaml", text)))

    classifier = f"classifier:\n  model: {model}\n  input_range: [-1, 1]\n"
    # images in subfolders only: exit 2 (not the camera code 3) and the setting that finds them
    out = check(f"{{kind: folder, path: {frames}}}", classifier)
    line = one_error_line(out.stderr)
    assert (
        out.returncode == 2
        and "1 match in its subfolders (e.g. night-1/a.jpg): set source.recursive: true" in line
    )
    out = check(f"{{kind: folder, path: {frames}, recursive: true}}", classifier)
    assert out.returncode == 0, out.stderr
    assert (
        "source: 1 image(s)" in out.stdout and "model.tflite loads on cpu: species (6 labels)" in out.stdout
    )
    out = check(f"{{kind: folder, path: {tmp_path / 'nowhere'}}}")
    assert out.returncode == 2 and "nowhere: does not exist" in one_error_line(out.stderr)
    # the labels file gone, then a truncated model
    (model.parent / "labels.txt").rename(model.parent / "labels.bak")
    out = check("{kind: synthetic}", classifier)
    assert out.returncode == 2 and "label" in one_error_line(out.stderr).lower()
    (model.parent / "labels.bak").rename(model.parent / "labels.txt")
    model.write_bytes(model.read_bytes()[:2000])
    out = check("{kind: synthetic}", classifier)
    assert out.returncode == 2 and str(model) in one_error_line(out.stderr)


def test_the_first_frame_is_timed_from_the_process_start(tmp_path: Path) -> None:
    """The run summary said "first frame after 0.04 s", from run(): imports and the model load were hidden."""
    from edge.proc import process_age_s

    age = process_age_s()
    assert age is not None and 0.0 <= age < 3600  # this test process: started minutes ago at most
    config = write_config(tmp_path / "c.yaml", synthetic_yaml(tmp_path / "data"))
    out = trapcam("run", "--config", str(config), "--max-frames", "2")
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if "first frame" in x]
    process_s = float(line.split("first frame ")[1].split(" s after the process")[0])
    run_s = float(line.split("(")[1].split(" s after the run began")[0])
    assert process_s > run_s  # the interpreter and the imports came first
