"""Draining the outbox to an MQTT broker from one thread of its own.

Why a fresh paho client per connection, driven by our own select() loop: paho re-sends its own
unacknowledged messages on reconnect (even with a clean session), which would interleave with
our replay. With a new client per connection, the outbox is the only memory: on every connect we
replay from the oldest undelivered row in `seq` order, at most `max_inflight` unacknowledged, and
mark a row delivered when its PUBACK arrives. A message sent but not acknowledged before a
disconnect is sent again (at least once; consumers drop duplicates by id); after de-duplication
a consumer sees the outbox order. Everything the broker does (refuse us, vanish, stall) is
handled in this thread: nothing raises into the pipeline, whose only calls are `wake` and `stats`.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.config import MqttConfig
from edge.errors import ConfigError
from edge.mqtt.credentials import redact, resolve_password
from edge.mqtt.discovery import Discovery
from edge.mqtt.messages import status_message
from edge.mqtt.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)

STATES = ("connecting", "connected", "disconnected", "auth-failed", "tls-failed", "stopped")
_AUTH_REFUSALS = ("Bad user name or password", "Not authorized")
_POLL_S = 1.0  # an idle connection re-reads the outbox this often (rows enqueued without a wake)
_CONNACK_TIMEOUT_S = 15.0
_FETCH = 200  # rows read from the outbox at a time
_STOP_RESERVE_S = 1.0  # of a stop's time, kept for the acks, the offline status and DISCONNECT


class Publisher:
    """paho-mqtt 2.x client (CallbackAPIVersion.VERSION2) in its own thread, draining the outbox."""

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        outbox: Outbox,
        discovery: Callable[[], Discovery] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.outbox = outbox
        self._discovery = discovery if cfg.homeassistant.enabled else None
        self._password = resolve_password(cfg)  # ConfigError now, at start, not in the thread
        self._secrets = [self._password] if self._password else []
        self._tls = _check_tls_files(cfg)
        self._client_id = cfg.client_id or f"trapcam-{device_id}"
        self._where = f"{cfg.host}:{cfg.port}"

        self._state = "stopped"
        self._last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._wake_pending = False
        self._stop_deadline = 0.0
        self._woken = True  # the first connect looks at the outbox anyway
        self._rediscover = False  # set by rediscover(): the discovery config is sent again

        self.connects = 0
        self.reconnects = 0
        self.sent = 0
        self.acked = 0
        self._attempts = 0
        self._auth_reported = False

        # Per connection (touched only by the publisher thread, and by paho callbacks in it).
        self._connack: Any = None
        self._lost = False
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._acked_mids: list[int] = []
        self._buffer: deque[OutboxRow] = deque()
        self._cursor = 0
        self._last_read = 0.0

    # ------------------------------------------------------------ public

    def start(self) -> None:
        if self._thread is not None:
            return
        self._state = "connecting"
        self._stopping.clear()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.outbox.add_listener(self.wake)
        self._thread = threading.Thread(target=self._run, name="trapcam-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what the outbox still holds (while connected, within `timeout`), publish status offline
        (retained), wait for outstanding acks, disconnect cleanly."""
        thread = self._thread
        if thread is None:
            self._state = "stopped"
            return
        self.outbox.remove_listener(self.wake)
        self._stop_deadline = time.monotonic() + max(0.5, timeout * 0.8)
        self._stopping.set()
        self.wake()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("MQTT publisher to %s did not stop within %.0f s", self._where, timeout)
        self._thread = None
        self._state = "stopped"

    @property
    def state(self) -> str:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def wake(self) -> None:
        """New rows were enqueued: look at the outbox now (cheap; safe from any thread)."""
        self._woken = True
        wake_w = self._wake_w
        if wake_w is not None and not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(OSError):  # full (already awake) or closed (stopped)
                wake_w.send(b"\0")

    def stats(self) -> dict[str, Any]:
        """connects: sessions accepted by the broker; reconnects: connection attempts after the first;
        sent: outbox rows published (replays included); acked: rows acknowledged (PUBACK)."""
        return {
            "state": self._state,
            "last_error": self._last_error,
            "connects": self.connects,
            "sent": self.sent,
            "acked": self.acked,
            "reconnects": self.reconnects,
            "inflight": len(self._inflight),
        }

    # ------------------------------------------------------------ thread: connections and backoff

    def _run(self) -> None:
        low, high = self.cfg.reconnect_backoff_s
        delay = low
        try:
            while not self._stopping.is_set():
                try:
                    outcome = self._session()
                except Exception as exc:  # a bug or an unusable database: report, back off, go on
                    self._error("disconnected", f"MQTT publisher to {self._where} failed: {exc}", exc=True)
                    outcome = "error"
                if self._stopping.is_set():
                    break
                if outcome == "was-connected":
                    delay = low
                    wait = low
                elif outcome == "auth":
                    wait = high
                else:
                    wait = delay
                    delay = min(delay * 2, high)
                self._stopping.wait(wait)
        finally:
            self._state = "stopped"
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = None
            for s in (wake_r, wake_w):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(0)  # we bound what is in flight; paho must not queue on its own
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, self._password)
        if self._tls is not None:
            ca, cert, key, insecure = self._tls
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
            if insecure:
                client.tls_insecure_set(True)
        will = status_message(self.cfg.topic_prefix, self.device_id, False, reason="connection lost")
        client.will_set(will.topic, will.payload_json(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _session(self) -> str:
        """One connection from connect to loss; returns how it ended (for the backoff)."""
        self._attempts += 1
        if self._attempts > 1:
            self.reconnects += 1
        self._connack = None
        self._lost = False
        self._inflight.clear()
        self._acked_mids.clear()
        self._buffer.clear()
        self._cursor = 0
        try:
            client = self._new_client()
        except (ssl.SSLError, OSError, ValueError) as exc:
            return self._fail_tls(exc)
        try:
            client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
        except ssl.SSLError as exc:
            return self._fail_tls(exc)
        except (OSError, ValueError) as exc:
            self._error("disconnected", f"cannot connect to MQTT broker {self._where}: {_reason(exc)}")
            return "net"
        try:
            return self._serve(client)
        finally:
            self._close(client)

    def _fail_tls(self, exc: BaseException) -> str:
        self._error("tls-failed", f"TLS with MQTT broker {self._where} failed: {_reason(exc)}")
        return "tls"

    def _serve(self, client: mqtt.Client) -> str:
        deadline = time.monotonic() + _CONNACK_TIMEOUT_S
        announced = False
        while True:
            if self._connack is not None and self._connack.is_failure:
                return self._refused(self._connack)
            connected = self._connack is not None and not self._lost
            if connected and not announced:
                announced = True
                self._on_session_start(client)
            if self._lost:
                return self._lost_connection(announced)
            if self._stopping.is_set() and not (connected and announced and self._backlog_to_drain()):
                if announced:
                    self._clean_stop(client)
                return "stopped"
            if not connected and time.monotonic() > deadline:
                self._error("disconnected", f"MQTT broker {self._where} did not answer CONNECT in time")
                return "net"
            if connected:
                if self._rediscover and announced:
                    self._announce(client, clear=False)
                self._fill(client)
            if not self._step(client, _POLL_S):
                return self._lost_connection(announced)
            self._settle_acks()

    def _on_session_start(self, client: mqtt.Client) -> None:
        self.connects += 1
        self._state = "connected"
        self._last_error = None
        if self._auth_reported:
            log.info("MQTT broker %s accepts the credentials again", self._where)
        self._auth_reported = False
        log.info("MQTT connected to %s as %s", self._where, self._client_id)
        online = status_message(self.cfg.topic_prefix, self.device_id, True)
        client.publish(online.topic, online.payload_json(), qos=1, retain=True)
        self._announce(client, clear=True)
        # Acknowledgements of the last connection may still sit in the writer's queue: commit them,
        # so the replay below does not send those rows again.
        self.outbox.db.flush(timeout=5.0)
        self._woken = True

    def _announce(self, client: mqtt.Client, clear: bool) -> None:
        """Publish the Home Assistant discovery config (retained); at a session's start, first clear
        the per-sensor configs earlier versions retained."""
        self._rediscover = False
        if self._discovery is None:
            return
        try:
            plan = self._discovery()
            if clear:
                for legacy in plan.clear:  # an empty retained payload removes an old config
                    client.publish(legacy, b"", qos=1, retain=True)
            for message in plan.messages:
                client.publish(message.topic, message.payload_json(), qos=message.qos, retain=message.retain)
        except Exception as exc:
            self._warn(f"Home Assistant discovery messages could not be made: {exc}")

    def rediscover(self) -> None:
        """The sensors changed (a taxon entered the top counted ones): send the discovery config again
        while connected (at the next connect anyway). Safe from any thread."""
        self._rediscover = True
        self.wake()

    def _refused(self, reason: Any) -> str:
        name = reason.getName() if hasattr(reason, "getName") else str(reason)
        if name in _AUTH_REFUSALS:
            user = self.cfg.username
            text = f"MQTT broker {self._where} refused user {user!r}: {name}"
            self._last_error = redact(text, self._secrets)
            self._state = "auth-failed"
            if not self._auth_reported:
                self._auth_reported = True
                high = self.cfg.reconnect_backoff_s[1]
                log.error(
                    "%s (check mqtt.username and the password); messages stay in the outbox; "
                    "retrying every %g s",
                    self._last_error,
                    high,
                )
            return "auth"
        self._error("disconnected", f"MQTT broker {self._where} refused the connection: {name}")
        return "refused"

    def _lost_connection(self, was_connected: bool) -> str:
        if was_connected:
            self._error("disconnected", f"lost the connection to MQTT broker {self._where}")
            return "was-connected"
        if self._connack is not None and self._connack.is_failure:
            return self._refused(self._connack)
        self._error("disconnected", f"MQTT broker {self._where} closed the connection before accepting it")
        return "net"

    # ------------------------------------------------------------ thread: the network loop

    def _step(self, client: mqtt.Client, timeout: float) -> bool:
        """One select() over the broker socket and our wake-up socket; False when the connection is gone."""
        sock = client.socket()
        if sock is None:
            return False
        wake_r = self._wake_r
        assert wake_r is not None
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        if pending or self._acked_mids:
            timeout = 0.0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select([sock, wake_r], wlist, [], timeout)
        except (OSError, ValueError):
            return False
        if wake_r in readable:
            self._wake_pending = False
            with contextlib.suppress(OSError):
                wake_r.recv(4096)
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if sock in readable or pending:
            rc = client.loop_read()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (sock in writable or client.want_write()):
            rc = client.loop_write()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost = True
        return not self._lost

    def _fill(self, client: mqtt.Client) -> None:
        """Send outbox rows in seq order while fewer than max_inflight wait for their PUBACK."""
        room = self.cfg.max_inflight - len(self._inflight)
        if room <= 0:
            return
        now = time.monotonic()
        if not self._buffer and (self._woken or now - self._last_read >= _POLL_S):
            self._read_more(now)
        sent: list[int] = []
        while room > 0 and self._buffer and not self._lost:
            row = self._buffer.popleft()
            info = client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost = True
                break
            self._cursor = row.seq
            self._inflight[info.mid] = row.seq
            sent.append(row.seq)
            room -= 1
            if not self._buffer:
                self._read_more(time.monotonic())
        if sent:
            self.sent += len(sent)
            self.outbox.note_attempt(sent)

    def _backlog_to_drain(self) -> bool:
        """While stopping: are rows still unsent, with time left to send them before the stop's deadline?

        A replay that ends, or a trap stopped by systemd, should not leave what is already committed
        in the outbox for the next start when the broker is right there: the backlog goes out until
        `_STOP_RESERVE_S` before the deadline (what is left then waits in the outbox, as always).
        """
        if time.monotonic() >= self._stop_deadline - _STOP_RESERVE_S:
            return False
        if not self._buffer:
            self._woken = True  # read now, and have the writer commit what it still holds
            self._read_more(time.monotonic())
        return bool(self._buffer)

    def _read_more(self, now: float) -> None:
        woken, self._woken = self._woken, False
        rows = self.outbox.pending(self._cursor, max(_FETCH, self.cfg.max_inflight))
        if not rows and woken:
            # Rows enqueued a moment ago are still in the writer's queue: have it commit them now
            # rather than after its flush interval.
            self.outbox.db.flush(timeout=2.0)
            rows = self.outbox.pending(self._cursor, max(_FETCH, self.cfg.max_inflight))
        self._last_read = now
        self._buffer.extend(rows)

    def _settle_acks(self) -> None:
        if not self._acked_mids:
            return
        mids, self._acked_mids = self._acked_mids, []
        seqs = [seq for seq in (self._inflight.pop(mid, None) for mid in mids) if seq is not None]
        if seqs:
            self.acked += len(seqs)
            self.outbox.mark_delivered(seqs)

    def _clean_stop(self, client: mqtt.Client) -> None:
        """Offline status (retained), the acks still due, then DISCONNECT (the broker drops our will)."""
        deadline = self._stop_deadline or time.monotonic() + 5.0
        offline = status_message(self.cfg.topic_prefix, self.device_id, False, reason="stopped")
        info = client.publish(offline.topic, offline.payload_json(), qos=1, retain=True)
        while time.monotonic() < deadline and not self._lost:
            self._settle_acks()
            if info.is_published() and not self._inflight:
                break
            self._step(client, 0.05)
        self._settle_acks()
        client.disconnect()
        while client.want_write() and client.socket() is not None and time.monotonic() < deadline:
            if client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        log.info("MQTT disconnected from %s (status offline)", self._where)

    def _close(self, client: mqtt.Client) -> None:
        self._settle_acks()
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._inflight.clear()
        self._buffer.clear()

    # ------------------------------------------------------------ paho callbacks (in our thread)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connack = reason

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._lost = True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acked_mids.append(mid)

    # ------------------------------------------------------------ reporting

    def _error(self, state: str, text: str, exc: bool = False) -> None:
        """Record the latest problem; log it when it changes (a broker away for hours is one line)."""
        text = redact(text, self._secrets)
        changed = text != self._last_error
        self._last_error = text
        self._state = state
        if changed:
            log.log(logging.WARNING, "%s; retrying (messages stay in the outbox)", text, exc_info=exc)

    def _warn(self, text: str) -> None:
        log.warning("%s", redact(text, self._secrets))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _check_tls_files(cfg: MqttConfig) -> tuple[str | None, str | None, str | None, bool] | None:
    """TLS settings with files checked now (a missing certificate is a config error, not a retry loop)."""
    tls = cfg.tls
    if tls is None:
        return None
    paths: list[str | None] = []
    for name in ("ca_file", "cert_file", "key_file"):
        value: Path | None = getattr(tls, name)
        if value is None:
            paths.append(None)
            continue
        try:
            with open(value, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"mqtt.tls.{name}: cannot read {value}: {exc.strerror or exc}") from None
        paths.append(str(value))
    return paths[0], paths[1], paths[2], bool(tls.insecure)
