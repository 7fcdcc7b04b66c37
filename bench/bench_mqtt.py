"""MQTT benchmark: what the SQLite outbox costs against raw paho, and how fast a backlog replays.

Why side by side: the outbox buys "nothing lost" (a row per message, a delivery mark per PUBACK,
all through the database's one writer thread); what that costs is a ratio against paho publishing
the same payloads at QoS 1 to the same broker with the same in-flight window, measured in the
same run (interleaved repeats, medians), because absolute rates drift on a shared machine.

Run:  python -m bench.bench_mqtt [--messages 5000] [--replay 10000] [--repeats 3] [--max-inflight 20]

Rows:
- raw paho, pipelined: publish all payloads (QoS 1, paho's in-flight window = max_inflight), then
  `wait_for_publish()` on each; messages / wall time.
- raw paho, one by one: publish, `wait_for_publish()`, next (one round trip per message).
- outbox: `Outbox.enqueue()` of pre-built messages into a fresh database (default writer options)
  with a connected `Publisher`; the clock stops when every PUBACK is marked in the database
  (`delivered_utc` committed). messages / wall time.
- replay: the broker is stopped, N messages are queued and committed, the broker is started; time
  from the broker accepting connections to the last delivery mark committed (the publisher's
  reconnect backoff is 0.05..0.2 s, so it reconnects at once), split into reconnect and drain.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.broker import MOSQUITTO, Broker
from edge.config import MqttConfig
from edge.mqtt import Message, Outbox, Publisher, track_message
from edge.store.db import Database

DEVICE = "trap-bench"
PREFIX = "trapcam"


def make_messages(n: int) -> list[Message]:
    """Track messages as the loop makes them (about 400 bytes of JSON each)."""
    return [
        track_message(
            PREFIX,
            DEVICE,
            {
                "track_id": i,
                "run_id": 1,
                "first_utc": "2026-07-01T21:30:00.000000Z",
                "last_utc": "2026-07-01T21:31:10.500000Z",
                "hits": 42,
                "level": "species",
                "label": "Noctua pronuba",
                "score": 0.913,
                "lineage": {"order": "Lepidoptera", "family": "Noctuidae", "species": "Noctua pronuba"},
                "best_detection_id": 1000 + i,
                "moved_px": 135.2,
            },
        )
        for i in range(1, n + 1)
    ]


def wait(predicate, timeout: float, what: str, step: float = 0.001) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: {what} did not happen within {timeout:g} s")
        time.sleep(step)


# ---------------------------------------------------------------- raw paho


def raw_paho(broker: Broker, messages: list[Message], max_inflight: int, pipelined: bool) -> float:
    """messages/s for paho alone, QoS 1, waiting for every PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{time.monotonic_ns()}")
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port, keepalive=60)
    client.loop_start()
    wait(client.is_connected, 10, "raw client connect")
    payloads = [(m.topic, m.payload_json()) for m in messages]
    try:
        start = time.perf_counter()
        if pipelined:
            infos = [client.publish(t, p, qos=1) for t, p in payloads]
            for info in infos:
                info.wait_for_publish(30)
        else:
            for t, p in payloads:
                client.publish(t, p, qos=1).wait_for_publish(30)
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    return len(messages) / elapsed


# ---------------------------------------------------------------- through the outbox


def start_publisher(broker: Broker, db_path: Path, max_inflight: int) -> tuple[Database, Outbox, Publisher]:
    cfg = MqttConfig(
        enabled=True,
        host=broker.host,
        port=broker.port,
        max_inflight=max_inflight,
        reconnect_backoff_s=(0.05, 0.2),
        outbox_max_rows=1_000_000,
    )
    db = Database(db_path)  # the trap's defaults: batches of 200, flushed every second
    outbox = Outbox(db, cfg)
    publisher = Publisher(cfg, DEVICE, outbox)
    publisher.start()
    wait(lambda: publisher.state == "connected", 10, "publisher connect")
    return db, outbox, publisher


def through_outbox(broker: Broker, workdir: Path, messages: list[Message], max_inflight: int) -> float:
    """messages/s from the first enqueue to the last PUBACK marked in the database."""
    db, outbox, publisher = start_publisher(
        broker, workdir / f"outbox-{time.monotonic_ns()}.db", max_inflight
    )
    try:
        acked0 = publisher.acked
        start = time.perf_counter()
        for m in messages:
            outbox.enqueue(m)
        wait(lambda: publisher.acked - acked0 >= len(messages), 120, "outbox delivery")
        db.flush(60)  # the delivery marks are committed
        elapsed = time.perf_counter() - start
        assert outbox.stats()["pending"] == 0, "benchmark: rows left undelivered"
    finally:
        publisher.stop()
        db.close()
    return len(messages) / elapsed


def replay(broker: Broker, workdir: Path, messages: list[Message], max_inflight: int) -> tuple[float, float]:
    """(seconds to reconnect, seconds to drain) after a broker restart with len(messages) queued."""
    db, outbox, publisher = start_publisher(
        broker, workdir / f"replay-{time.monotonic_ns()}.db", max_inflight
    )
    try:
        broker.stop()
        wait(lambda: publisher.state == "disconnected", 10, "publisher notices the outage")
        for m in messages:
            outbox.enqueue(m)
        db.flush(120)
        assert outbox.stats()["pending"] == len(messages)
        connects, acked0 = publisher.connects, publisher.acked
        broker.start()
        start = time.perf_counter()
        wait(lambda: publisher.connects > connects, 30, "reconnect")
        connected = time.perf_counter()
        wait(lambda: publisher.acked - acked0 >= len(messages), 300, "replay")
        db.flush(60)
        done = time.perf_counter()
        assert outbox.stats()["pending"] == 0, "benchmark: replay left rows undelivered"
    finally:
        publisher.stop()
        db.close()
    return connected - start, done - connected


# ---------------------------------------------------------------- report


def versions() -> str:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False).stdout
        mosquitto = out.splitlines()[0].replace("mosquitto version ", "")
    except (OSError, IndexError):
        mosquitto = "?"
    return (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"paho-mqtt {paho.mqtt.__version__}, mosquitto {mosquitto}, SQLite via Python sqlite3"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per throughput run")
    parser.add_argument("--replay", type=int, default=10_000, help="messages queued during the outage")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians shown)")
    parser.add_argument("--max-inflight", type=int, default=20, help="QoS 1 window, both sides")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    # The outages below are on purpose: keep the publisher's "lost the connection" warnings quiet.
    logging.getLogger("edge.mqtt").setLevel(logging.ERROR)

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(workdir / "broker")
    broker.start()
    try:
        messages = make_messages(args.messages)
        raw, serial, boxed = [], [], []
        for _ in range(args.repeats):
            raw.append(raw_paho(broker, messages, args.max_inflight, pipelined=True))
            boxed.append(through_outbox(broker, workdir, make_messages(args.messages), args.max_inflight))
            serial.append(raw_paho(broker, messages, args.max_inflight, pipelined=False))
        ratios = [b / r for b, r in zip(boxed, raw, strict=True)]
        reconnect, drain = replay(broker, workdir, make_messages(args.replay), args.max_inflight)
    finally:
        broker.stop()

    med = statistics.median
    print(f"\nMQTT outbox vs raw paho ({versions()}; {args.messages} messages x {args.repeats} repeats,")
    size = len(messages[0].payload_json())
    print(f"QoS 1, max_inflight {args.max_inflight}, track payloads of {size} bytes)\n")
    print("| row | result | repeats |")
    print("|---|---|---|")
    print(f"| raw paho publish, pipelined, wait_for_publish | {med(raw):,.0f} msg/s | {_list(raw)} |")
    print(f"| raw paho publish, one by one, wait_for_publish | {med(serial):,.0f} msg/s | {_list(serial)} |")
    print(f"| outbox: enqueue -> PUBACK marked in SQLite | {med(boxed):,.0f} msg/s | {_list(boxed)} |")
    print(f"| ratio outbox / raw pipelined (median of pairs) | {med(ratios):.2f} | {_list(ratios, '.2f')} |")
    total = reconnect + drain
    print(
        f"| replay {args.replay:,} queued after a broker restart | {total:.2f} s "
        f"(reconnect {reconnect:.2f} s + drain {drain:.2f} s = {args.replay / drain:,.0f} msg/s) | 1 |"
    )
    if args.keep is None:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def _list(values: list[float], fmt: str = ",.0f") -> str:
    return ", ".join(format(v, fmt) for v in values)


if __name__ == "__main__":
    main()
