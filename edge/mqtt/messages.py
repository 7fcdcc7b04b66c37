"""The messages a trap publishes: one small frozen record per message, built before it is queued.

Why build (and serialise) here, in the caller: a payload that cannot become JSON must fail where it
was made, with a line naming the field, not later inside the database writer or the publisher
thread. Every payload carries an `id` (consumers drop duplicates: QoS 1 and outbox replay deliver
at least once), the `device_id` and a UTC `ts`, so a message read on its own is self-describing.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import PurePath
from typing import Any
from uuid import uuid4

from edge.errors import MqttError
from edge.store.schema import utc_iso, utc_now

# Kinds the outbox table accepts (its CHECK constraint) and kinds that have a topic of their own.
KINDS = ("status", "track", "summary", "health", "discovery", "event")
TOPIC_KINDS = ("status", "track", "summary", "health", "event")
_TOPIC_PART = re.compile(r"^[^#+/\x00]+$")


def _json_default(value: Any) -> Any:
    """Datetimes as UTC ISO text (the database's format); numpy scalars as plain numbers."""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(payload: Mapping[str, Any]) -> str:
    """Compact JSON text; NaN and infinity are refused (JSON has neither; consumers would choke)."""
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise MqttError(f"MQTT payload cannot be sent as JSON: {exc}") from None


@dataclass(frozen=True)
class Message:
    """One MQTT message as it goes into the outbox: `msg_id` is also the payload's "id" (except for
    Home Assistant's discovery config, which carries no id or time so that it never changes)."""

    msg_id: str
    kind: str
    topic: str
    payload: dict[str, Any]
    qos: int
    retain: bool

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MqttError(f"MQTT message kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.qos not in (0, 1, 2):
            raise MqttError(f"MQTT message {self.msg_id}: qos {self.qos!r}: expected 0, 1 or 2")
        if not self.topic or any(c in self.topic for c in "#+\x00"):
            raise MqttError(
                f"MQTT message {self.msg_id}: topic {self.topic!r}: expected a topic without # or +"
            )
        if self.kind == "discovery":  # Home Assistant's format: the same bytes at every connect
            to_json(self.payload)
            return
        missing = [k for k in ("id", "device_id", "ts") if k not in self.payload]
        if missing:
            raise MqttError(f"MQTT message {self.msg_id}: payload lacks {', '.join(missing)}")
        if self.payload["id"] != self.msg_id:
            raise MqttError(
                f"MQTT message {self.msg_id}: payload id {self.payload['id']!r} differs from msg_id"
            )
        to_json(self.payload)  # fail here, in the caller, not in the writer thread

    def payload_json(self) -> str:
        return to_json(self.payload)


def topic(prefix: str, device_id: str, kind: str) -> str:
    """`<prefix>/<device_id>/<kind>`: the one place topic names are made."""
    if kind not in TOPIC_KINDS:
        raise MqttError(f"MQTT topic kind {kind!r}: expected one of {', '.join(TOPIC_KINDS)}")
    if not prefix or any(c in prefix for c in "#+\x00"):
        raise MqttError(f"MQTT topic prefix {prefix!r}: expected text without # or +")
    if not _TOPIC_PART.match(device_id or ""):
        raise MqttError(f"MQTT device_id {device_id!r}: expected text without /, # or +")
    return f"{prefix.rstrip('/')}/{device_id}/{kind}"


def new_id(device_id: str, kind: str) -> str:
    return f"{device_id}-{kind}-{uuid4().hex[:16]}"


def _message(
    prefix: str, device_id: str, kind: str, body: Mapping[str, Any], qos: int, retain: bool
) -> Message:
    msg_id = new_id(device_id, kind)
    payload = {"id": msg_id, "device_id": device_id, "ts": utc_iso(utc_now())}
    for key, value in body.items():
        if key in payload:
            raise MqttError(f"MQTT {kind} message: field {key!r} is reserved (id, device_id, ts)")
        payload[key] = value
    return Message(msg_id, kind, topic(prefix, device_id, kind), payload, qos, retain)


def _when(kind: str, name: str, value: Any) -> str | None:
    """A timestamp field as UTC ISO text: datetimes are converted, text is kept as given."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        try:
            return utc_iso(value)
        except Exception as exc:  # StorageError: naive datetime
            raise MqttError(f"MQTT {kind} message: {name}: {exc}") from None
    raise MqttError(f"MQTT {kind} message: {name}: expected a datetime or ISO text, got {value!r}")


def _lineage(value: Any) -> dict[str, str] | None:
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise MqttError(
                f"MQTT track message: lineage: expected a mapping or JSON text, got {value!r}"
            ) from None
        if parsed is None or isinstance(parsed, dict):
            return parsed
    raise MqttError(f"MQTT track message: lineage: expected a mapping level -> label, got {value!r}")


def _number(kind: str, name: str, value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise MqttError(f"MQTT {kind} message: {name}: expected a finite number, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


TRACK_FIELDS = (
    "track_id", "run_id", "first_utc", "last_utc", "hits", "level", "label", "score",
    "lineage", "best_detection_id", "moved_px", "length_px", "length_mm", "size_class",
)  # fmt: skip


def track_message(prefix: str, device_id: str, track: Mapping[str, Any], revision: int = 1) -> Message:
    """One finished track (QoS 1, not retained: every track matters, but none replaces another).

    revision: 1 for a track's first message; a track that a later run continued (an insect that sat
    through a restart, edge/restart.py) is published again with the next revision and the same
    track_id, carrying the whole visit: a consumer keeps the highest revision per track_id.
    """
    if "track_id" not in track:
        raise MqttError("MQTT track message: track_id missing")
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise MqttError(f"MQTT track message: revision: expected an integer >= 1, got {revision!r}")
    first = _when("track", "first_utc", track.get("first_utc"))
    last = _when("track", "last_utc", track.get("last_utc"))
    body: dict[str, Any] = {
        "track_id": _number("track", "track_id", track["track_id"]),
        "run_id": _number("track", "run_id", track.get("run_id")),
        "first_utc": first,
        "last_utc": last,
        "duration_s": None,
        "hits": _number("track", "hits", track.get("hits")),
        "level": track.get("level"),
        "label": track.get("label"),
        "score": _number("track", "score", track.get("score")),
        "lineage": _lineage(track.get("lineage", track.get("lineage_json"))),
        "best_detection_id": _number("track", "best_detection_id", track.get("best_detection_id")),
        "moved_px": _number("track", "moved_px", track.get("moved_px")),
        "length_px": _number("track", "length_px", track.get("length_px")),
        "length_mm": _number("track", "length_mm", track.get("length_mm")),
        "size_class": track.get("size_class"),
        "revision": revision,
        # false only in a revision: the continued track turned out to be no insect or a sliver
        "counted": track.get("status", "ended") == "ended",
    }
    start, end = track.get("first_utc"), track.get("last_utc")
    if isinstance(start, datetime) and isinstance(end, datetime):
        body["duration_s"] = round((end - start).total_seconds(), 3)
    return _message(prefix, device_id, "track", body, qos=1, retain=False)


def summary_message(prefix: str, device_id: str, summary: Mapping[str, Any]) -> Message:
    """Interval counts (QoS 1, retained: a dashboard that connects later sees the latest at once)."""
    body = {key: value for key, value in summary.items()}
    for name in ("start_utc", "end_utc"):
        if name in body:
            body[name] = _when("summary", name, body[name])
    body.setdefault("counts", {})
    body.setdefault("today", {})
    for name in ("counts", "today"):
        if not isinstance(body[name], Mapping):
            raise MqttError(f"MQTT summary message: {name}: expected a mapping, got {body[name]!r}")
    return _message(prefix, device_id, "summary", body, qos=1, retain=True)


def health_message(prefix: str, device_id: str, health: Mapping[str, Any]) -> Message:
    """A health sample (QoS 1, so the outbox knows it arrived; not retained: stale health misleads)."""
    return _message(prefix, device_id, "health", dict(health), qos=1, retain=False)


def status_message(prefix: str, device_id: str, online: bool, **extra: Any) -> Message:
    """Retained online/offline; the last will uses the same topic with state "offline"."""
    body = {"state": "online" if online else "offline", **extra}
    return _message(prefix, device_id, "status", body, qos=1, retain=True)


def event_message(prefix: str, device_id: str, event: str, **fields: Any) -> Message:
    """Something a person should know (disk nearly full, camera lost): QoS 1, not retained."""
    if not isinstance(event, str) or not event:
        raise MqttError(f"MQTT event message: event: expected a non-empty name, got {event!r}")
    return _message(prefix, device_id, "event", {"event": event, **fields}, qos=1, retain=False)
