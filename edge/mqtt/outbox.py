"""The MQTT outbox: messages are rows in the trap's database before they are sent.

Why a table and not a queue in memory: a broker away for a night, or a process killed with
SIGKILL, must lose nothing. Writing the message through the database's one writer thread puts it
in the same ordered stream as the track row queued just before it: the message is
committed in the same transaction as its track or a later one, never without it. `seq`
(AUTOINCREMENT) is the order of sending; `delivered_utc` is set when the broker acknowledged it.

The table is bounded (`outbox_max_rows` undelivered rows): when a broker stays away for weeks,
the least valuable rows go first (old health samples, then summaries that a newer retained one
replaces), never tracks; what was dropped is counted in `counters`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edge.config import MqttConfig
from edge.errors import MqttError, StorageError
from edge.mqtt.messages import KINDS, Message
from edge.store.db import Database
from edge.store.schema import utc_iso, utc_now

log = logging.getLogger(__name__)

DROPPED_HEALTH = "outbox_dropped_health"
DROPPED_SUMMARY = "outbox_dropped_summary"
DELETED_DELIVERED = "outbox_deleted_delivered"

_INSERT = (
    "INSERT INTO outbox (msg_id, kind, topic, payload, qos, retain, created_utc) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(msg_id) DO NOTHING"
)
# One statement for any number of rows: the seqs travel as one JSON array (a fixed SQL text, so
# the database compiles and checks it once).
_MARK_DELIVERED = (
    "UPDATE outbox SET delivered_utc = ? "
    "WHERE delivered_utc IS NULL AND seq IN (SELECT value FROM json_each(?))"
)
_NOTE_ATTEMPT = "UPDATE outbox SET attempts = attempts + 1 WHERE seq IN (SELECT value FROM json_each(?))"
_PENDING = (
    "SELECT seq, msg_id, kind, topic, payload, qos, retain, created_utc, attempts FROM outbox "
    "WHERE delivered_utc IS NULL AND seq > ? ORDER BY seq LIMIT ?"
)
_DROP_HEALTH = (
    "DELETE FROM outbox WHERE seq IN "
    "(SELECT seq FROM outbox WHERE delivered_utc IS NULL AND kind = 'health' ORDER BY seq LIMIT ?)"
)
# Undelivered summaries older than the newest undelivered one on the same topic, oldest first.
_DROP_SUPERSEDED_SUMMARIES = (
    "DELETE FROM outbox WHERE seq IN (SELECT o.seq FROM outbox o "
    "WHERE o.delivered_utc IS NULL AND o.kind = 'summary' AND o.seq < "
    "(SELECT MAX(n.seq) FROM outbox n "
    "WHERE n.delivered_utc IS NULL AND n.kind = 'summary' AND n.topic = o.topic) "
    "ORDER BY o.seq LIMIT ?)"
)
_ADD_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)


@dataclass(frozen=True)
class OutboxRow:
    """One queued message as stored: `payload` is the JSON text that goes on the wire."""

    seq: int
    msg_id: str
    kind: str
    topic: str
    payload: str
    qos: int
    retain: bool
    created_utc: str
    attempts: int


@dataclass(frozen=True)
class CompactReport:
    """What one `compact` did; `over_bound` when tracks alone exceed outbox_max_rows."""

    deleted_delivered: int
    dropped_health: int
    dropped_summary: int
    pending: int
    over_bound: bool


class Outbox:
    """Queue messages through the database writer; read what is still to be sent."""

    def __init__(self, db: Database, cfg: MqttConfig) -> None:
        self.db = db
        self.cfg = cfg
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()
        self._warned_over_bound = False

    # ------------------------------------------------------------ writing (never blocks on the broker)

    def enqueue(self, message: Message) -> None:
        """Queue the message behind everything already handed to the writer (e.g. its track row)."""
        if not isinstance(message, Message):
            raise MqttError(f"Outbox.enqueue: expected a Message, got {type(message).__name__}")
        if message.kind not in KINDS:  # Message checks this too; the table's CHECK would reject it later
            raise MqttError(f"Outbox.enqueue: kind {message.kind!r}: expected one of {', '.join(KINDS)}")
        params = (
            message.msg_id,
            message.kind,
            message.topic,
            message.payload_json(),
            int(message.qos),
            int(bool(message.retain)),
            utc_iso(utc_now()),
        )
        self.db.submit(_INSERT, params)
        for listener in self._snapshot_listeners():
            try:
                listener()
            except Exception:  # a listener must never break the pipeline's call
                log.exception("outbox listener failed")

    def mark_delivered(self, seqs: Sequence[int]) -> None:
        """The broker acknowledged these rows (queued: committed with the writer's next batch)."""
        if seqs:
            self.db.submit(_MARK_DELIVERED, (utc_iso(utc_now()), json.dumps([int(s) for s in seqs])))

    def note_attempt(self, seqs: Sequence[int]) -> None:
        """These rows were sent once more (how often a message had to be replayed)."""
        if seqs:
            self.db.submit(_NOTE_ATTEMPT, (json.dumps([int(s) for s in seqs]),))

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after each enqueue (the publisher's `wake`): send without polling delay."""
        with self._listeners_lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._listeners_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _snapshot_listeners(self) -> list[Callable[[], None]]:
        with self._listeners_lock:
            return list(self._listeners)

    # ------------------------------------------------------------ reading (committed rows only)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Through the database's read-only connection (shared with its statement checks, so locked)."""
        with self.db._reader_lock:
            try:
                return self.db._reader_conn().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"{self.db.path}: cannot read the outbox: {exc}") from None

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[OutboxRow]:
        """Undelivered rows with seq > after_seq, oldest first (committed rows; queued ones come later)."""
        rows = self._read(_PENDING, (int(after_seq), int(limit)))
        return [
            OutboxRow(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), bool(r[6]), r[7], int(r[8])) for r in rows
        ]

    def stats(self) -> dict[str, Any]:
        """pending, oldest_pending_utc, delivered_total, dropped counters (for health reports)."""
        ((pending, oldest, delivered),) = self._read(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE delivered_utc IS NULL), "
            "(SELECT MIN(created_utc) FROM outbox WHERE delivered_utc IS NULL), "
            "(SELECT COUNT(*) FROM outbox WHERE delivered_utc IS NOT NULL)"
        )
        counters = dict(
            self._read(
                "SELECT name, value FROM counters WHERE name IN (?, ?, ?)",
                (DROPPED_HEALTH, DROPPED_SUMMARY, DELETED_DELIVERED),
            )
        )
        return {
            "pending": int(pending),
            "oldest_pending_utc": oldest,
            "delivered_total": int(delivered) + int(counters.get(DELETED_DELIVERED, 0)),
            "dropped_health": int(counters.get(DROPPED_HEALTH, 0)),
            "dropped_summary": int(counters.get(DROPPED_SUMMARY, 0)),
        }

    # ------------------------------------------------------------ bounding the table

    def compact(self, now: datetime) -> CompactReport:
        """Delete old delivered rows; keep undelivered rows within outbox_max_rows (see module doc).

        Runs on the writer thread (one transaction, after everything queued before it), and waits.
        """
        cutoff = utc_iso(now - timedelta(days=self.cfg.delivered_keep_days))
        bound = int(self.cfg.outbox_max_rows)

        def work(conn: sqlite3.Connection) -> CompactReport:
            deleted = conn.execute(
                "DELETE FROM outbox WHERE delivered_utc IS NOT NULL AND delivered_utc < ?", (cutoff,)
            ).rowcount
            pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE delivered_utc IS NULL").fetchone()[0]
            excess = max(0, pending - bound)
            health = summary = 0
            if excess:
                health = conn.execute(_DROP_HEALTH, (excess,)).rowcount
                excess -= health
            if excess:
                # A retained summary is replaced by the next one on its topic: only the newest matters.
                summary = conn.execute(_DROP_SUPERSEDED_SUMMARIES, (excess,)).rowcount
                excess -= summary
            for name, value in (
                (DROPPED_HEALTH, health),
                (DROPPED_SUMMARY, summary),
                (DELETED_DELIVERED, deleted),
            ):
                if value:
                    conn.execute(_ADD_COUNTER, (name, int(value)))
            return CompactReport(deleted, health, summary, pending - health - summary, over_bound=excess > 0)

        report = self.db.run_sync(work)
        if report.dropped_health or report.dropped_summary:
            log.warning(
                "MQTT outbox over its bound of %d undelivered messages: dropped %d health and %d summary "
                "messages (tracks are kept)",
                bound,
                report.dropped_health,
                report.dropped_summary,
            )
        if report.over_bound and not self._warned_over_bound:
            log.warning(
                "MQTT outbox holds %d undelivered messages, more than mqtt.outbox_max_rows=%d, and they are "
                "tracks (never dropped): the broker has been unreachable for long; the table keeps growing",
                report.pending,
                bound,
            )
        self._warned_over_bound = report.over_bound
        return report
