"""Faults between the trap and a real mosquitto: outages, SIGKILL, refused passwords, TLS.

The bar (DESIGN.md): broker down, process killed mid-write - every message is delivered once the
fault is gone. Delivery is judged by a real subscriber at the broker's other end; duplicates are
allowed (QoS 1, replay) and removed by id, after which the order must be the outbox order.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import Broker, Proxy, Subscriber, make_certificates, wait_until

from edge.config import MqttConfig, MqttTlsConfig
from edge.mqtt import Outbox, Publisher, track_message
from edge.store.db import Database, connect_reader

REPO = Path(__file__).resolve().parent.parent
DEVICE = "trap-f1"
TRACK_TOPIC = f"trapcam/{DEVICE}/track"
STATUS_TOPIC = f"trapcam/{DEVICE}/status"
PASSWORD = "s3cret-Pa55word"

pytestmark = pytest.mark.timeout(120)


def cfg_for(broker: Broker, **kw: object) -> MqttConfig:
    options: dict[str, object] = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "reconnect_backoff_s": (0.1, 0.5),
        "keepalive_s": 10,
    }
    options.update(kw)
    return MqttConfig(**options)  # type: ignore[arg-type]


def enqueue_tracks(outbox: Outbox, first: int, n: int) -> list[str]:
    ids = []
    for track_id in range(first, first + n):
        message = track_message("trapcam", DEVICE, {"track_id": track_id, "label": "Aglais io", "hits": 5})
        outbox.enqueue(message)
        ids.append(message.msg_id)
    return ids


def pending(db: Database, outbox: Outbox) -> int:
    db.flush(10)
    return int(outbox.stats()["pending"])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "trap.db", batch_size=50, flush_interval_s=0.05)
    yield database
    database.close()


# ---------------------------------------------------------------- outage


def test_broker_outage_loses_nothing_and_replays_in_order(tmp_path: Path, db: Database) -> None:
    broker = Broker(tmp_path / "broker", persistence=True)  # the consumer's session survives the restart
    broker.start()
    consumer = Subscriber(broker, [TRACK_TOPIC], client_id="consumer-outage", clean=False).start()
    outbox = Outbox(db, cfg_for(broker))
    publisher = Publisher(cfg_for(broker), DEVICE, outbox)
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        ids = enqueue_tracks(outbox, 1, 20)
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 20)
        assert consumer.unique_ids(TRACK_TOPIC) == ids, "messages enqueued while connected arrive in order"

        # Stop the broker while a burst is on its way (some of it may be in flight, unacknowledged).
        ids += enqueue_tracks(outbox, 21, 100)
        wait_until(lambda: publisher.stats()["sent"] >= 40, step=0.001)
        broker.stop()
        assert wait_until(lambda: publisher.state == "disconnected")
        ids += enqueue_tracks(outbox, 121, 50)
        waiting = pending(db, outbox)
        assert waiting >= 50  # stored, not delivered
        reconnects = publisher.stats()["reconnects"]
        assert wait_until(lambda: publisher.stats()["reconnects"] >= reconnects + 3)  # it keeps trying
        assert pending(db, outbox) == waiting

        broker.start()
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 170, timeout=30)
        assert consumer.unique_ids(TRACK_TOPIC) == ids  # each exactly once after de-duplication, in order
        assert wait_until(lambda: pending(db, outbox) == 0)
        assert publisher.stats()["connects"] == 2

        ids += enqueue_tracks(outbox, 171, 10)
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 180)
        assert consumer.unique_ids(TRACK_TOPIC) == ids
        assert wait_until(lambda: pending(db, outbox) == 0)
    finally:
        publisher.stop()
        consumer.stop()
        broker.stop()


def test_a_stop_sends_the_backlog_first_while_the_broker_is_there(tmp_path: Path, db: Database) -> None:
    """A replay that ends, or a trap stopped by systemd, leaves nothing committed in the outbox for later."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    consumer = Subscriber(broker, [TRACK_TOPIC], client_id="consumer-stop").start()
    outbox = Outbox(db, cfg_for(broker))
    ids = enqueue_tracks(outbox, 1, 3000)  # a backlog from a night without the broker
    assert pending(db, outbox) == 3000
    publisher = Publisher(cfg_for(broker), DEVICE, outbox)
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected", step=0.001)
        publisher.stop(timeout=10.0)  # the run ends right after connecting: most of it not yet sent
        assert pending(db, outbox) == 0
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 3000)
        assert consumer.unique_ids(TRACK_TOPIC) == ids
    finally:
        publisher.stop()
        consumer.stop()
        broker.stop()
    # with the broker away a stop does not wait for it: the backlog stays, the stop is quick
    outbox = Outbox(db, cfg_for(broker))
    enqueue_tracks(outbox, 3001, 10)
    publisher = Publisher(cfg_for(broker), DEVICE, outbox)
    publisher.start()
    started = time.monotonic()
    publisher.stop(timeout=10.0)
    assert time.monotonic() - started < 3.0
    assert pending(db, outbox) == 10


def test_messages_lost_in_flight_are_sent_again_after_reconnect(tmp_path: Path, db: Database) -> None:
    """PUBLISH packets that never reach the broker (no PUBACK) are replayed on the next connection."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    proxy = Proxy(broker.host, broker.port)
    consumer = Subscriber(broker, [TRACK_TOPIC]).start()  # directly on the broker, subscribed throughout
    cfg = cfg_for(broker, port=proxy.port, host=proxy.host, max_inflight=10)
    outbox = Outbox(db, cfg)
    publisher = Publisher(cfg, DEVICE, outbox)
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        ids = enqueue_tracks(outbox, 1, 10)
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 10)

        proxy.blackhole = True
        sent = publisher.stats()["sent"]
        ids += enqueue_tracks(outbox, 11, 30)
        assert wait_until(
            lambda: publisher.stats()["inflight"] == 10 and publisher.stats()["sent"] == sent + 10
        )
        assert proxy.swallowed > 0
        assert pending(db, outbox) == 30  # sent is not delivered
        proxy.blackhole = False
        proxy.cut()

        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 40)
        assert consumer.unique_ids(TRACK_TOPIC) == ids
        assert wait_until(lambda: pending(db, outbox) == 0)
        assert publisher.stats()["connects"] == 2
    finally:
        publisher.stop()
        consumer.stop()
        proxy.close()
        broker.stop()


# ---------------------------------------------------------------- SIGKILL

CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timedelta, timezone
    from edge.config import MqttConfig
    from edge.mqtt import Outbox, Publisher, track_message
    from edge.store.db import Database
    from edge.store.schema import RunInfo, TrackRow

    db_path, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    db = Database(db_path, batch_size=20, flush_interval_s=0.02)
    run_id = db.start_run(RunInfo(device_id="trap-f1", software_version="t", config_json="{}", source="test"))
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=port, client_id="trap-kill",
                     reconnect_backoff_s=(0.1, 0.5), max_inflight=10)
    outbox = Outbox(db, cfg)
    publisher = Publisher(cfg, "trap-f1", outbox)
    publisher.start()
    if mode == "produce":
        t0 = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
        track_id = db.next_ids()[0]
        n = 0
        while True:
            row = TrackRow(track_id=track_id, run_id=run_id, status="ended", first_utc=t0,
                           last_utc=t0 + timedelta(seconds=n), hits=3, x0=1, y0=1, x1=9, y1=9,
                           label="Aglais io", level="species", score=0.9)
            db.upsert_track(row)
            outbox.enqueue(track_message("trapcam", "trap-f1", {"track_id": track_id, "run_id": run_id,
                                                                 "first_utc": t0, "label": "Aglais io"}))
            track_id += 1
            n += 1
            if n % 20 == 0:
                print(n, flush=True)
            time.sleep(0.002)
    else:
        while True:
            db.flush(5)
            if outbox.stats()["pending"] == 0:
                break
            time.sleep(0.05)
        publisher.stop()
        db.close()
        print("drained", flush=True)
    """
)


def run_child(script: Path, db_path: Path, port: int, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, str(script), str(db_path), str(port), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_sigkill_mid_run_loses_no_committed_message_and_fires_the_last_will(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    consumer = Subscriber(broker, [TRACK_TOPIC, STATUS_TOPIC]).start()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db_path = tmp_path / "killed.db"
    child = run_child(script, db_path, broker.port, "produce")
    try:
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 150, timeout=40), child.stderr
        statuses = consumer.snapshot(STATUS_TOPIC)
        assert statuses and statuses[-1].payload["state"] == "online"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL

        # The broker delivers the last will: offline, because the connection was lost.
        assert wait_until(lambda: consumer.snapshot(STATUS_TOPIC)[-1].payload["state"] == "offline")
        assert consumer.snapshot(STATUS_TOPIC)[-1].payload["reason"] == "connection lost"

        con = connect_reader(db_path)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            committed = [
                r[0] for r in con.execute("SELECT msg_id FROM outbox WHERE kind = 'track' ORDER BY seq")
            ]
            orphans = con.execute(
                "SELECT COUNT(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM tracks t "
                "WHERE t.track_id = json_extract(o.payload, '$.track_id'))"
            ).fetchone()[0]
        finally:
            con.close()
        assert len(committed) >= 150 and orphans == 0
        assert set(consumer.unique_ids(TRACK_TOPIC)) <= set(committed)

        drain = run_child(script, db_path, broker.port, "drain")
        out, err = drain.communicate(timeout=60)
        assert drain.returncode == 0, err[-2000:]
        assert "drained" in out
        assert consumer.unique_ids(TRACK_TOPIC) == committed  # every committed message, once each, in order
        con = connect_reader(db_path)
        try:
            assert con.execute("SELECT COUNT(*) FROM outbox WHERE delivered_utc IS NULL").fetchone()[0] == 0
        finally:
            con.close()
        assert consumer.snapshot(STATUS_TOPIC)[-1].payload["state"] == "offline"  # clean stop this time
        assert consumer.snapshot(STATUS_TOPIC)[-1].payload["reason"] == "stopped"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        consumer.stop()
        broker.stop()


# ---------------------------------------------------------------- credentials


def test_wrong_password_is_auth_failed_without_leaking_it_then_the_right_one_delivers(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker(tmp_path / "broker", users={"trap": PASSWORD, "reader": "reader-pw"})
    broker.start()
    consumer = Subscriber(broker, [TRACK_TOPIC], username="reader", password="reader-pw").start()
    wrong = "wr0ng-Pa55word"
    cfg = cfg_for(broker, username="trap", password=wrong, reconnect_backoff_s=(0.1, 0.3))
    outbox = Outbox(db, cfg)
    publisher = Publisher(cfg, DEVICE, outbox)
    try:
        with caplog.at_level(logging.DEBUG):
            publisher.start()
            assert wait_until(lambda: publisher.state == "auth-failed")
            ids = enqueue_tracks(outbox, 1, 15)
            assert wait_until(lambda: publisher.stats()["reconnects"] >= 3)  # keeps retrying, quietly
            assert publisher.state == "auth-failed"
        error = publisher.last_error or ""
        assert f"{broker.host}:{broker.port}" in error and "'trap'" in error
        assert "Not authorized" in error or "Bad user name or password" in error
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert wrong not in error and wrong not in logged and PASSWORD not in logged
        auth_lines = [
            r for r in caplog.records if r.levelno >= logging.ERROR and "refused user" in r.getMessage()
        ]
        assert len(auth_lines) == 1  # one clear line, not one per retry
        assert pending(db, outbox) == 15  # kept...
        ids += enqueue_tracks(outbox, 16, 5)
        assert pending(db, outbox) == 20  # ...and the database still takes writes
        assert consumer.ids(TRACK_TOPIC) == []
    finally:
        publisher.stop()
    assert publisher.state == "stopped"

    monkeypatch.setenv("TRAP_TEST_MQTT_PW", PASSWORD)
    right = cfg_for(broker, username="trap", password_env="TRAP_TEST_MQTT_PW")
    publisher = Publisher(right, DEVICE, Outbox(db, right))
    try:
        publisher.start()
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 20)
        assert consumer.unique_ids(TRACK_TOPIC) == ids
        assert wait_until(lambda: pending(db, outbox) == 0)
        assert publisher.state == "connected" and publisher.last_error is None
    finally:
        publisher.stop()
        consumer.stop()
        broker.stop()


# ---------------------------------------------------------------- TLS


def test_tls_with_ca_and_client_certificate_delivers(tmp_path: Path, db: Database) -> None:
    broker = Broker(tmp_path / "broker", tls=True)
    broker.start()
    consumer = Subscriber(broker, [TRACK_TOPIC]).start()
    certs = broker.certs
    tls = MqttTlsConfig(ca_file=certs["ca"], cert_file=certs["client_cert"], key_file=certs["client_key"])
    cfg = cfg_for(broker, host="localhost", tls=tls)  # the server certificate names localhost
    outbox = Outbox(db, cfg)
    publisher = Publisher(cfg, DEVICE, outbox)
    try:
        publisher.start()
        ids = enqueue_tracks(outbox, 1, 10)
        assert wait_until(lambda: len(consumer.unique_ids(TRACK_TOPIC)) >= 10)
        assert consumer.unique_ids(TRACK_TOPIC) == ids
        assert publisher.state == "connected"
        assert wait_until(lambda: pending(db, outbox) == 0)
    finally:
        publisher.stop()
        consumer.stop()
        broker.stop()


def test_tls_refusals_keep_messages_queued(tmp_path: Path, db: Database) -> None:
    broker = Broker(tmp_path / "broker", tls=True)
    broker.start()
    certs = broker.certs
    stranger = make_certificates(tmp_path / "other-ca")  # a CA that did not sign the broker's certificate
    cases = {
        "wrong CA": MqttTlsConfig(
            ca_file=stranger["ca"], cert_file=certs["client_cert"], key_file=certs["client_key"]
        ),
        "no client certificate": MqttTlsConfig(ca_file=certs["ca"]),
    }
    outbox = Outbox(db, cfg_for(broker))
    enqueue_tracks(outbox, 1, 3)
    try:
        for name, tls in cases.items():
            cfg = cfg_for(broker, host="localhost", tls=tls)
            publisher = Publisher(cfg, DEVICE, Outbox(db, cfg))
            publisher.start()
            try:
                assert wait_until(lambda p=publisher: p.stats()["reconnects"] >= 2), name
                assert publisher.stats()["connects"] == 0, name
                assert publisher.last_error, name
                if name == "wrong CA":
                    assert publisher.state == "tls-failed"
                    assert "certificate verify failed" in publisher.last_error
            finally:
                publisher.stop()
        assert pending(db, outbox) == 3
    finally:
        broker.stop()


def test_unreadable_tls_file_is_a_config_error(tmp_path: Path, db: Database) -> None:
    from edge.errors import ConfigError

    missing = tmp_path / "nope.crt"
    cfg = MqttConfig(enabled=True, tls=MqttTlsConfig(ca_file=missing))
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file.*nope\.crt"):
        Publisher(cfg, DEVICE, Outbox(db, cfg))
