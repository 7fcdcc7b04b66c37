"""MQTT test helpers (no pytest): the mosquitto `Broker` (home: bench/broker.py) and a `Subscriber`.

The subscriber is a plain paho client that records what really arrived at the broker's other end:
tests judge delivery by it, never by the publisher's own counters.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `bench` lives at the repository root
    sys.path.insert(0, str(REPO))

from bench.broker import Broker, BrokerError, free_port, make_certificates  # noqa: E402

__all__ = [
    "Broker",
    "BrokerError",
    "Proxy",
    "Received",
    "Subscriber",
    "free_port",
    "make_certificates",
    "wait_until",
]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@dataclass(frozen=True)
class Received:
    topic: str
    payload: Any  # parsed JSON, or the text when it is not JSON
    retain: bool
    qos: int


class Subscriber:
    """A paho subscriber (QoS 1) that records every message; `clean=False` keeps a persistent session."""

    def __init__(
        self,
        broker: Broker,
        topics: Sequence[str],
        *,
        client_id: str | None = None,
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
        host: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = list(topics)
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{time.monotonic_ns()}",
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        if broker.tls:
            self.client.tls_set(
                ca_certs=str(broker.certs["ca"]),
                certfile=str(broker.certs["client_cert"]),
                keyfile=str(broker.certs["client_key"]),
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.host = host or broker.host
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        text = msg.payload.decode("utf-8", errors="replace")
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = text
        with self._lock:
            self.messages.append(Received(msg.topic, payload, bool(msg.retain), msg.qos))

    def start(self, timeout: float = 10.0) -> Subscriber:
        self.client.connect(self.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"subscriber: no SUBACK from {self.host}:{self.broker.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self, topic: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def ids(self, topic: str) -> list[str]:
        """Payload ids on `topic` in arrival order (duplicates included)."""
        return [m.payload["id"] for m in self.snapshot(topic) if isinstance(m.payload, dict)]

    def unique_ids(self, topic: str) -> list[str]:
        """Arrival order after dropping repeats (what a consumer de-duplicating by id sees)."""
        return list(dict.fromkeys(self.ids(topic)))

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_retained(
    broker: Broker, topic: str, expect: int = 1, timeout: float = 5.0, **kwargs: Any
) -> list[Received]:
    """The retained messages under `topic` (a filter), read by a fresh subscriber (waits for `expect`)."""
    sub = Subscriber(broker, [topic], **kwargs).start(timeout)
    try:
        wait_until(lambda: sum(m.retain for m in sub.snapshot()) >= expect, timeout)
        return [m for m in sub.snapshot() if m.retain]
    finally:
        sub.stop()


class Proxy:
    """A TCP relay in front of the broker that can swallow what clients send, and cut connections.

    Why: to lose messages *in flight* on purpose. With `blackhole` set, bytes from the client are
    read and dropped (the broker never sees those PUBLISH packets, so no PUBACK comes back); `cut()`
    then closes every relayed connection. A publisher must send those messages again after it
    reconnects; one that forgot them, or marked them delivered when sent, loses them here.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._server = socket.create_server((self.host, 0))
        self.port = int(self._server.getsockname()[1])
        self.blackhole = False
        self.swallowed = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self.blackhole:
                    self.swallowed += len(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every relayed connection (both sides) at once."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut()
