"""A real mosquitto broker for tests and benchmarks, on a free port of its own.

Why a real broker and not a fake: what has to be shown (a broker that goes away and comes back,
refuses a password, insists on a client certificate, delivers a last will) is the broker's
behaviour, which a fake would only assume. The port is chosen once and kept, so `restart()` brings
the broker back where the publisher keeps trying.

Used by tests/mqtt_broker.py and bench/bench_mqtt.py; no pytest here.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = os.environ.get("TRAPCAM_MOSQUITTO", shutil.which("mosquitto") or "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get(
    "TRAPCAM_MOSQUITTO_PASSWD", shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
)
HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """mosquitto could not be set up or started (the message holds the tail of its log)."""


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral (client source port) range; 32768 where unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nobody listens on right now, below the kernel's ephemeral range.

    A port from the ephemeral range can be lost while the broker is down: a trap that keeps
    reconnecting to HOST:PORT is sooner or later given PORT itself as its source port and connects
    to itself (TCP simultaneous open), and mosquitto then cannot bind it ("Address already in use";
    seen in the SIGKILL test). No client is ever given a port below that range.
    """
    high = _ephemeral_low()
    low = 20000 if high > 21000 else 1024
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise BrokerError(f"no free TCP port on {HOST} in {low}..{high - 1}")


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BrokerError(f"{' '.join(cmd[:2])} failed ({done.returncode}): {done.stderr.strip()[-400:]}")


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        ["openssl", "req", "-x509", *ec, "-days", "3", "-subj", "/CN=trapcam test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", "ca.key", "-out", "ca.crt"],
        folder,
    )  # fmt: skip
    for name, cn, usage, san in (
        ("server", "localhost", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"),
        ("client", "trapcam-client", "clientAuth", ""),
    ):
        (folder / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n{san}"
        )
        _run(["openssl", "req", "-new", *ec, "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
              "-out", f"{name}.csr"], folder)  # fmt: skip
        _run(
            ["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3", "-extfile", f"{name}.ext", "-out", f"{name}.crt"],
            folder,
        )  # fmt: skip
    return {
        "ca": folder / "ca.crt",
        "server_cert": folder / "server.crt",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.crt",
        "client_key": folder / "client.key",
    }


class Broker:
    """mosquitto in a folder of its own: config, log, optional password file, TLS and persistence.

    users: {name: password} -> a password file (mosquitto_passwd -b), anonymous clients refused.
    tls: a CA, server and client certificates made with openssl; clients must show a certificate
    (`require_certificate true`). persistence: off unless asked (a test of a persistent
    subscriber session across a restart asks for it).
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        tls: bool = False,
        persistence: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.users = dict(users or {})
        self.tls = tls
        self.persistence = persistence
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        self.certs: dict[str, Path] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None
        if not Path(MOSQUITTO).exists():
            raise BrokerError(f"mosquitto not found at {MOSQUITTO} (apt install mosquitto)")
        self._write_config()

    # ------------------------------------------------------------ set-up

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to 'mosquitto', which cannot read tmp dirs
        if self.persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if self.users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                _run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], self.workdir)
            passwd.chmod(0o600)
            lines.append(f"password_file {passwd}")
        if self.tls:
            self.certs = make_certificates(self.workdir / "certs")
            lines += [
                f"cafile {self.certs['ca']}",
                f"certfile {self.certs['server_cert']}",
                f"keyfile {self.certs['server_key']}",
                "require_certificate true",
            ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ life cycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and return once its port accepts connections."""
        if self.running:
            return
        self._log_file = open(self.workdir / "mosquitto.stderr", "ab")  # noqa: SIM115 (kept while it runs)
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not open port {self.port} within {timeout:g} s: {self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file, if any), SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay away `down_s` seconds, start again on the same port."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)
        self.start()

    def log_tail(self, chars: int = 2000) -> str:
        text = ""
        for path in (self.log_path, self.workdir / "mosquitto.stderr"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return text[-chars:]

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
