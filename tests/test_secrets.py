"""A broker password given in the config never reaches the database, a log line, an export or an error.

The database travels (backups, exports, a colleague's laptop, a data paper), logs go to journald
and support threads. Here a real trap run with a real mosquitto that demands the password, then the
day's export (CSV and Camtrap DP) and the report, and every byte they left behind is searched for
it; an older database that stored it is scrubbed by its migration (its backup too), and a
misspelled key never echoes its value in the config error.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import query
from mqtt_broker import Broker

from edge.config import SECRET_MARK
from edge.store.db import Database
from edge.store.schema import LATEST_VERSION, MIGRATIONS, RunInfo

ROOT = Path(__file__).resolve().parents[1]
SECRET = "Moth-Pa55word-9d1f"


def _trapcam(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_run_its_logs_exports_and_report_never_hold_the_broker_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Broker(tmp_path / "broker", users={"trap": SECRET}) as broker:
        config = tmp_path / "trap.yaml"
        config.write_text(
            f"device_id: secret-1\ndata_dir: {data}\n"
            "source: {kind: synthetic, width: 640, height: 360, frames: 60, insects: 5, seed: 3}\n"
            "site: {name: Meadow, latitude: 52.1, longitude: 5.2, timezone: UTC}\n"
            "logging: {level: DEBUG, format: text}\n"
            f"mqtt: {{enabled: true, host: {broker.host}, port: {broker.port}, username: trap, "
            f"password: {SECRET}}}\n"
        )
        run = _trapcam("run", "--config", str(config))
    assert run.returncode == 0, run.stderr[-2000:]
    db = data / "trapcam.db"
    # the password was really used: the broker let the trap in and took its messages
    assert query(db, "SELECT COUNT(*) FROM outbox WHERE delivered_utc IS NOT NULL")[0][0] > 0
    # a clean stop sends everything first, its last health sample too (nothing waits for the next start)
    assert query(db, "SELECT kind FROM outbox WHERE delivered_utc IS NULL") == []
    stored = json.loads(query(db, "SELECT config_json FROM runs")[0][0])
    assert stored["mqtt"]["password"] == SECRET_MARK and stored["mqtt"]["username"] == "trap"
    exported = _trapcam(
        "export", "--config", str(config), "--date", "2026-07-01", "--camtrap-dp", "--validate"
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    report = _trapcam("report", "--config", str(config))
    assert report.returncode == 0, report.stderr[-2000:]
    lines = run.stdout + run.stderr + exported.stdout + exported.stderr + report.stdout + report.stderr
    assert "edge.mqtt.publisher" in run.stderr  # the log lines were there to search
    assert SECRET not in lines
    assert list((data / "export").rglob("*.csv")) and list((data / "report").rglob("*.html"))
    assert _files_holding(data, SECRET) == []  # database, WAL, crops, exports, report, all of it


def test_an_older_database_that_stored_the_password_is_scrubbed_with_its_backup(tmp_path: Path) -> None:
    path = tmp_path / "trapcam.db"
    db = Database(path, migrations=MIGRATIONS[:6])  # the schema this migration (6) found
    config = {"device_id": "old", "mqtt": {"enabled": True, "password": SECRET}, "site": {"name": "x"}}
    db.start_run(
        RunInfo(device_id="old", software_version="0.0.9", config_json=json.dumps(config), source="s")
    )
    db.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 5")  # as trapcam before this migration left it
    con.commit()
    con.close()
    assert SECRET.encode() in path.read_bytes()
    Database(path).close()  # opening migrates
    assert query(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    stored = json.loads(query(path, "SELECT config_json FROM runs")[0][0])
    assert stored["mqtt"]["password"] == SECRET_MARK and stored["site"] == {"name": "x"}
    backups = list(tmp_path.glob("trapcam.db.v5.bak-*"))
    assert len(backups) == 1
    assert _files_holding(tmp_path, SECRET) == []  # not in the file's free pages, not in the backup


def test_a_misspelled_secret_key_is_named_but_its_value_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "trap.yaml"
    config.write_text(f"source: {{kind: synthetic}}\nmqtt:\n  enabled: true\n  passwrd: {SECRET}\n")
    out = _trapcam("validate-config", str(config))
    assert out.returncode == 2
    assert "mqtt.passwrd" in out.stderr and "trap.yaml:4" in out.stderr
    assert SECRET not in out.stdout + out.stderr
