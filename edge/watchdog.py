"""systemd notification: READY, STATUS, WATCHDOG pings and STOPPING, over $NOTIFY_SOCKET.

Why our own twenty lines instead of a library: the protocol is one datagram per message to the
socket systemd names in $NOTIFY_SOCKET (see sd_notify(3)); the Python bindings (systemd-python)
need a C build against libsystemd, which a Raspberry Pi venv does not have. Outside systemd
(no $NOTIFY_SOCKET) every call does nothing, so `trapcam run` behaves the same by hand.

The loop pings only while frames really flow (or while the schedule says the trap is idle on
purpose): a capture that hangs without raising stops the pings, and systemd restarts the service
after WatchdogSec, which is the point of having a watchdog at all.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; `ping` is rate-limited to a third of the watchdog interval."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = -float("inf")
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, text: str) -> bool:
        """Send one message ("READY=1", "STATUS=...", ...); False (logged once) when it cannot."""
        if self.address is None:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # never wait: a stuck receiver (its queue full) drops this message at once. A 1 s
                # timeout here cost the loop a second per ping (40 frames took 31 s in the test).
                sock.setblocking(False)
                sock.connect(address)
                sock.sendall(text.encode("utf-8"))
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("systemd notify socket %s: %s", self.address, exc)
                self._warned = True
            return False

    def ready(self, status: str = "running") -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def ping(self) -> None:
        """WATCHDOG=1, at most every watchdog interval / 3 (systemd's own advice is / 2)."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_s / 3:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        self.notify(f"STOPPING=1\nSTATUS={status}")
