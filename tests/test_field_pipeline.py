"""The device loop with field operations switched on: a real mosquitto, real SQLite, real crop files.

What is judged here is what arrives at the broker's far end (a subscriber) and what is in the
database, never the publisher's own counters.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import query, synthetic_config
from mqtt_broker import Broker, Subscriber, read_retained, wait_until

from edge.pipeline import Pipeline
from edge.watchdog import Notifier

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "field-01"
SMALL = {"width": 640, "height": 360, "frames": 120, "insects": 6, "frame_interval_s": 5.0}


def _mqtt(broker: Broker, **extra: Any) -> str:
    lines = [f"  enabled: true\n  host: {broker.host}\n  port: {broker.port}"]
    lines += [f"  {key}: {value}" for key, value in extra.items()]
    return "mqtt:\n" + "\n".join(lines) + "\n"


def _config(data_dir: Path, extra: str, **source: Any) -> Any:
    return synthetic_config(data_dir, f"device_id: {DEVICE}\n{extra}", **(SMALL | source))


def _ended_tracks(db: Path) -> dict[int, tuple[Any, ...]]:
    rows = query(db, "SELECT track_id, label, lineage_json, run_id FROM tracks WHERE status = 'ended'")
    return {r[0]: r[1:] for r in rows}


def _track_messages(sub: Subscriber) -> dict[int, dict[str, Any]]:
    """Track payloads by track_id after de-duplication by message id (a consumer's view)."""
    seen: dict[str, dict[str, Any]] = {}
    for m in sub.snapshot(f"trapcam/{DEVICE}/track"):
        seen.setdefault(m.payload["id"], m.payload)
    by_track: dict[int, dict[str, Any]] = {}
    for payload in seen.values():
        assert payload["track_id"] not in by_track, f"track {payload['track_id']} published twice"
        by_track[payload["track_id"]] = payload
    return by_track


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Broker(tmp_path / "broker") as b:
        yield b


# ---------------------------------------------------------------- a night published


def test_night_publishes_every_track_and_stores_summaries_and_health(broker: Broker, tmp_path: Path) -> None:
    extra = _mqtt(broker) + "summary: {interval_s: 60}\nhealth: {interval_s: 5}\n"
    cfg = _config(tmp_path / "data", extra, seed=3)
    with Subscriber(broker, [f"trapcam/{DEVICE}/#"]) as sub:
        result = Pipeline(cfg).run()
        db = cfg.database_path
        ended = _ended_tracks(db)
        assert len(ended) == len(result.finished_tracks) >= 4
        assert wait_until(lambda: len(_track_messages(sub)) >= len(ended), timeout=20)
        messages = _track_messages(sub)
    assert set(messages) == set(ended)
    for track_id, (label, lineage, run_id) in ended.items():
        payload = messages[track_id]
        assert payload["label"] == label and payload["run_id"] == run_id and payload["device_id"] == DEVICE
        assert payload["lineage"] == (json.loads(lineage) if lineage else None)
    assert not query(db, "SELECT COUNT(*) FROM outbox WHERE delivered_utc IS NULL AND kind = 'track'")[0][0]

    # summaries: every finished track once, effort = the night's span (5 s gaps are all watched)
    rows = query(db, "SELECT start_utc, effort_s, frames_processed, tracks, counts_json FROM summaries")
    assert len(rows) >= 10  # 120 frames x 5 s = 10 minutes in 60 s intervals
    assert sum(r[3] for r in rows) == len(ended)
    assert sum(r[2] for r in rows) == result.frames == 120
    assert sum(r[1] for r in rows) == pytest.approx(119 * 5.0)
    unsure = sum(json.loads(r[4]).get("unsure", {}).get("unsure", 0) for r in rows)
    assert unsure == len(ended)  # no classifier: every track is "unsure"
    retained = read_retained(broker, f"trapcam/{DEVICE}/summary")
    assert retained and retained[0].payload["start"] == max(r[0] for r in rows)

    health = query(db, "SELECT status, payload_json FROM health")
    assert health, "a health sample at the start and one at the end"
    last = json.loads(health[-1][1])
    assert last["frames_processed"] == 120 and last["version"] and last["disk_free_gb"] > 0
    status = read_retained(broker, f"trapcam/{DEVICE}/status")
    assert status and status[0].payload["state"] == "offline"  # a clean stop says so
    (discovery,) = read_retained(broker, "homeassistant/device/+/config")
    sensors = discovery.payload["components"].values()
    templates = " ".join(c["value_template"] for c in sensors)
    # the health sensors, the total and the unsure insects (no classifier: every one is unsure, none
    # per taxon, and no open set, so no unknown sensor)
    assert len(sensors) == 7 and 'value_json.today["unsure"]' in templates
    assert 'value_json.today["unknown"]' not in templates
    for key in ("fps", "inference_ms_p50", "disk_free_gb", "cpu_temp_c", "since_last_detection_s"):
        assert key in templates and key in last


def test_broker_refusing_credentials_keeps_counting(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker", users={"trap": "right-password"}) as broker:
        secret = "wrong-Password-7781"
        (tmp_path / "pw").write_text(secret + "\n")
        extra = _mqtt(broker, username="trap", password_file=str(tmp_path / "pw"))
        config = tmp_path / "trap.yaml"
        config.write_text(
            f"device_id: {DEVICE}\ndata_dir: {tmp_path / 'data'}\n"
            "source: {kind: synthetic, width: 640, height: 360, frames: 80, insects: 5, seed: 2}\n" + extra
        )
        out = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=180,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    assert secret not in out.stdout + out.stderr
    assert "auth-failed" in out.stdout and "waiting" in out.stdout
    assert "refused" in out.stderr.lower() or "password" in out.stderr.lower()
    db = tmp_path / "data" / "trapcam.db"
    ended = _ended_tracks(db)
    assert len(ended) >= 3 and query(db, "SELECT COUNT(*) FROM detections")[0][0] > 0
    pending = query(db, "SELECT COUNT(*) FROM outbox WHERE kind = 'track' AND delivered_utc IS NULL")[0][0]
    assert pending == len(ended)  # every track waits in the outbox for a broker that lets us in
    last = json.loads(query(db, "SELECT payload_json FROM health ORDER BY health_id DESC LIMIT 1")[0][0])
    assert "mqtt-auth-failed" in last["flags"]


# ---------------------------------------------------------------- SIGKILL, broker away, restart


def test_sigkill_mid_run_with_the_broker_away_then_restart_loses_no_track(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")  # configured, not started: the trap runs without it
    data = tmp_path / "data"
    db = data / "trapcam.db"
    config = tmp_path / "trap.yaml"
    source = "{kind: synthetic, width: 640, height: 360, frames: 2000, insects: 40, seed: 5, realtime: true, "
    config.write_text(
        f"device_id: {DEVICE}\ndata_dir: {data}\nsource: {source}frame_interval_s: 0.05}}\n"
        "tracker: {max_gap_s: 2, reid_window_s: 2}\nstorage: {flush_interval_s: 0.2}\n"
        + _mqtt(broker, reconnect_backoff_s="[0.2, 1.0]")
    )
    trap = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def finished_and_open() -> bool:
            """At least 3 finished tracks queued and one confirmed track still open: the kill cuts both."""
            if not db.exists():
                return False
            try:
                queued = query(db, "SELECT COUNT(*) FROM outbox WHERE kind = 'track'")[0][0]
                open_now = query(db, "SELECT COUNT(*) FROM tracks WHERE status = 'confirmed'")[0][0]
            except sqlite3.Error:
                return False
            return queued >= 3 and open_now >= 1

        assert wait_until(finished_and_open, timeout=120, step=0.2), (
            "no finished and open tracks before the kill"
        )
    finally:
        trap.send_signal(signal.SIGKILL)
        trap.wait(30)
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"
    # what the killed process left open, read before anything restarts
    open_at_kill = {r[0] for r in query(db, "SELECT track_id FROM tracks WHERE status = 'confirmed'")}
    assert open_at_kill, "no confirmed track was open at the SIGKILL: nothing for the restart to recover"
    queued_at_kill = {
        r[0] for r in query(db, "SELECT json_extract(payload, '$.track_id') FROM outbox WHERE kind = 'track'")
    }

    with broker, Subscriber(broker, [f"trapcam/{DEVICE}/track"]) as sub:
        text = config.read_text().replace("realtime: true", "realtime: false").replace("2000", "60")
        config.write_text(text)
        again = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=180,
        )
        assert again.returncode == 0, again.stderr[-2000:]
        ended = _ended_tracks(db)
        assert wait_until(lambda: len(_track_messages(sub)) >= len(ended), timeout=30)
        messages = _track_messages(sub)
        raw = [m.payload for m in sub.snapshot(f"trapcam/{DEVICE}/track")]
    assert set(messages) == set(ended)  # before the kill, ended by the restart's recovery, and after
    assert len(queued_at_kill) >= 3 and queued_at_kill <= set(messages)  # queued while the broker was away
    assert query(db, "SELECT exit_reason FROM runs WHERE run_id = 1")[0][0].startswith("interrupted")
    # every track open at the kill was ended by the restart's recovery, in the killed run
    placeholders = ", ".join("?" * len(open_at_kill))
    settled = query(
        db,
        f"SELECT track_id, status, run_id FROM tracks WHERE track_id IN ({placeholders})",
        tuple(open_at_kill),
    )
    assert sorted(settled) == [(t, "ended", 1) for t in sorted(open_at_kill)]
    # ... and reached the broker exactly once: one delivery, one message id, per recovered track
    arrivals = Counter(p["track_id"] for p in raw if p["track_id"] in open_at_kill)
    assert arrivals == Counter(dict.fromkeys(open_at_kill, 1)), arrivals
    ids = [p["id"] for p in raw if p["track_id"] in open_at_kill]
    assert len(set(ids)) == len(ids) == len(open_at_kill)
    assert all(messages[t]["run_id"] == 1 for t in open_at_kill)
    assert query(db, "SELECT COUNT(*) FROM outbox WHERE kind = 'track' AND delivered_utc IS NULL")[0][0] == 0
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"


# ---------------------------------------------------------------- schedule, light, retention, watchdog


def test_schedule_window_limits_effort_and_switches_the_light(tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    # the night runs 21:30:00 to 21:39:55 UTC; the trap watches from 21:35
    extra = (
        "schedule:\n  windows: [{start: '21:35', end: '05:00'}]\n  light: {gpio_pin: 17}\n"
        "summary: {interval_s: 60}\n"
    )
    cfg = _config(tmp_path / "data", extra, start="'2026-07-01T21:30:00+00:00'")
    result = Pipeline(cfg, ops_options={"light_pin_factory": factory}).run()
    assert result.inactive_frames == 60 and result.frames == 60  # 5 minutes each at 5 s
    effort = query(cfg.database_path, "SELECT SUM(effort_s), MIN(start_utc) FROM summaries")[0]
    assert effort[0] == pytest.approx(59 * 5.0)  # the gap across the window's start is not effort
    assert effort[1] == "2026-07-01T21:35:00.000000Z"
    levels = [state.state for state in factory.pin(17).states]
    assert levels[0] is False and True in levels and levels[-1] is False  # off, on at 21:35, off at exit
    first_on = levels.index(True)
    assert all(levels[first_on : len(levels) - 1])


def test_disk_nearly_full_during_a_run_removes_oldest_crops_and_keeps_every_row(tmp_path: Path) -> None:
    extra = "retention: {min_free_gb: 1.0, check_interval_s: 1, keep_best_crop: true}\n"
    cfg = _config(tmp_path / "data", extra, frames=200, insects=8, realtime="true", frame_interval_s=0.03)
    room = 10_000  # bytes of crops the disk has room for above the 1 GB watermark

    def free_bytes(_path: Path) -> int:
        """A disk whose free space is what the crops really leave (deleting a crop frees its bytes)."""
        used = sum(f.stat().st_size for f in cfg.crops_path.rglob("*.jpg"))
        return 1024**3 + room - used

    result = Pipeline(cfg, ops_options={"free_bytes": free_bytes}).run()
    db = cfg.database_path
    rows = query(db, "SELECT detection_id, crop_path, crop_deleted_utc FROM detections ORDER BY detection_id")
    assert len(rows) == result.detections  # no row deleted
    deleted = [r for r in rows if r[2] is not None]
    kept = [r for r in rows if r[1] is not None and r[2] is None]
    assert deleted and kept, "some crops deleted for space, best crops kept"
    for _, crop_path, _ in deleted:
        assert not (cfg.crops_path / crop_path).exists()
    best = {r[0] for r in query(db, "SELECT best_detection_id FROM tracks WHERE best_detection_id > 0")}
    others_kept = [r[0] for r in kept if r[0] not in best]
    if best & {r[0] for r in deleted}:  # best crops go only when nothing else is left
        assert not others_kept
    if others_kept:
        assert all(r[0] < min(others_kept) for r in deleted if r[0] not in best)  # oldest first
    for _, crop_path, _ in kept:
        assert (cfg.crops_path / crop_path).is_file()


def test_watchdog_is_notified_ready_pinged_while_frames_flow_and_told_stopping(tmp_path: Path) -> None:
    import threading

    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(0.2)
    received: list[str] = []
    done = threading.Event()

    def listen() -> None:  # like systemd: read every datagram as it comes
        while not done.is_set():
            try:
                received.append(server.recv(4096).decode())
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "300000"})  # 0.3 s: a ping per 0.1 s
    cfg = _config(tmp_path / "data", "", frames=60, realtime="true", frame_interval_s=0.03)
    Pipeline(cfg, notifier=notifier).run()
    time.sleep(0.3)
    done.set()
    listener.join(2)
    server.close()
    kinds = Counter(line.split("=")[0] for message in received for line in message.splitlines())
    assert received[0].startswith("READY=1")
    stopping = next(i for i, m in enumerate(received) if "STOPPING=1" in m)
    assert not any("WATCHDOG=1" in m for m in received[stopping:])  # no ping once it stops
    assert kinds["WATCHDOG"] >= 5  # ~1.8 s of frames
    assert Notifier({}).enabled is False  # outside systemd: nothing is sent


def test_a_stuck_notify_socket_does_not_stop_the_loop(tmp_path: Path) -> None:
    address = str(tmp_path / "stuck.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)  # never read: its queue fills after a few datagrams
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000"})
    cfg = _config(tmp_path / "data", "", frames=40, realtime="true", frame_interval_s=0.02)
    result = Pipeline(cfg, notifier=notifier).run()
    server.close()
    assert result.frames == 40 and result.exit_reason == "end-of-source"
    assert result.elapsed_s < 10  # 0.8 s of frames; a waiting send held it a second per ping (31 s)


def test_sigkill_keeps_the_effort_of_the_open_summary_interval(tmp_path: Path) -> None:
    """A SIGKILL in the middle of a 15-minute interval used to lose all its effort (the interval lived
    in memory until it closed). Now the open interval is stored after each frame: the killed run's
    effort is the span of the frames it committed, to within one frame gap, and the day's effort
    after a restart adds the two runs up, as an unkilled run watching the same frames would."""
    from datetime import datetime, timedelta, timezone

    from edge.export.data import effort_seconds, snapshot

    data = tmp_path / "data"
    db = data / "trapcam.db"
    config = tmp_path / "trap.yaml"
    gap = 0.1
    start = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)
    source = (
        f"{{kind: synthetic, width: 320, height: 180, frames: 3000, insects: 300, seed: 2, realtime: true, "
        f"frame_interval_s: {gap}, start: '{start.isoformat()}'}}"
    )
    config.write_text(
        f"device_id: {DEVICE}\ndata_dir: {data}\nsource: {source}\nstorage: {{flush_interval_s: 0.2}}\n"
        "health: {interval_s: 5}\n"
    )
    trap = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def frames_seen() -> int:
        try:
            return int(query(db, "SELECT COUNT(DISTINCT ts_utc) FROM detections")[0][0]) if db.exists() else 0
        except sqlite3.Error:
            return 0

    def health_rows() -> int:
        try:
            return int(query(db, "SELECT COUNT(*) FROM health")[0][0]) if db.exists() else 0
        except sqlite3.Error:
            return 0

    try:
        assert wait_until(lambda: frames_seen() >= 30 and health_rows() >= 2, timeout=120, step=0.2), (
            "too few frames (or health samples) before the kill"
        )
    finally:
        trap.send_signal(signal.SIGKILL)
        trap.wait(30)
    last = datetime.fromisoformat(
        query(db, "SELECT MAX(ts_utc) FROM detections")[0][0].replace("Z", "+00:00")
    )
    watched = (last - start).total_seconds()  # first frame to the last one whose rows were committed
    assert watched >= 29 * gap
    with snapshot(db) as conn:
        killed = effort_seconds(conn, start, start + timedelta(hours=1))
    assert abs(killed - watched) <= gap + 1e-6, (killed, watched)

    # the restart watches 30 more frames an hour later; the day's effort is both runs'. (With the
    # first run's 300 insects in 30 frames the sheet is 40% insects and static_screen rebuilt every
    # other frame: 43 s of this test; 3 keep the first run's density.)
    later = start + timedelta(hours=1)
    config.write_text(
        config.read_text()
        .replace("realtime: true", "realtime: false")
        .replace("frames: 3000", "frames: 30")
        .replace("insects: 300", "insects: 3")
        .replace(start.isoformat(), later.isoformat())
    )
    again = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    with snapshot(db) as conn:
        day = effort_seconds(conn, start - timedelta(hours=1), start + timedelta(hours=3))
    assert abs(day - (watched + 29 * gap)) <= gap + 1e-6, (day, watched)
    # the killed run ended at its last logged moment (its last health sample, wall clock), not at
    # its start: a replay's frame times lie in the past and cannot say when it died
    started, ended, reason = query(
        db, "SELECT started_utc, ended_utc, exit_reason FROM runs WHERE run_id = 1"
    )[0]
    last_health = query(db, "SELECT MAX(ts_utc) FROM health WHERE run_id = 1")[0][0]
    assert reason.startswith("interrupted") and ended == last_health > started
    # and its frame counter holds the frames it committed, not the 0 of before its first stats write
    frames, in_summaries = query(
        db,
        "SELECT frames_processed, (SELECT SUM(frames_processed) FROM summaries WHERE run_id = 1) "
        "FROM runs WHERE run_id = 1",
    )[0]
    assert frames == in_summaries >= 30, (frames, in_summaries)
