"""The demo's options and their checks: no heavy imports, so `trapcam --help` stays fast on a trap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge.errors import ConfigError, TrapcamError

NIGHT_START = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)


class DemoError(TrapcamError):
    """The demo cannot run with these options or in this folder."""


@dataclass(frozen=True)
class DemoOptions:
    """Sizes of the demo. The defaults take a few minutes on two CPU cores.

    species: the synthetic species of the training set and the night (None: all 11).
    per_class / epochs / image_size: the training set and run.
    frames / insects / seed: the synthetic night (one frame every 5 s: 240 frames = 20 minutes).
    broker: "host" or "host:port" of an MQTT broker to publish to; None: no publishing.
    budget_pp / min_agreement: the int8 check's bar, as `trapcam convert --budget/--min-agreement`.
    verbose: show TensorFlow's and the converter's own log lines (else they go to native.log).
    """

    out: Path = Path("trapcam-data/demo")
    seed: int = 7
    frames: int = 240
    insects: int = 14
    width: int = 1280
    height: int = 720
    per_class: int = 300
    epochs: int = 15
    image_size: int = 64
    species: tuple[str, ...] | None = None
    broker: str | None = None
    budget_pp: float = 1.0
    min_agreement: float = 0.99
    verbose: bool = False

    def check(self) -> None:
        """One-line errors for sizes that cannot make a demo."""
        for name, value, lo in (
            ("--frames", self.frames, 20),
            ("--insects", self.insects, 1),
            ("--per-class", self.per_class, 20),
            ("--epochs", self.epochs, 1),
        ):
            if value < lo:
                raise ConfigError(f"{name} {value}: expected at least {lo}")
        if self.broker is not None:
            broker_address(self.broker)
        if not 0.0 <= self.budget_pp <= 100.0:
            raise ConfigError(f"--budget {self.budget_pp}: expected percentage points in 0..100")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"--min-agreement {self.min_agreement}: expected a fraction in 0..1")
        if self.species is not None:
            from edge.synth.species import species_by_name  # numpy only; no TensorFlow

            if len(set(self.species)) < 2:
                raise ConfigError(
                    f"--species {','.join(self.species)}: expected at least two different species"
                )
            for name in self.species:
                species_by_name(name)


def broker_address(text: str) -> tuple[str, int]:
    """'host' or 'host:port' -> (host, port); a one-line error otherwise."""
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "1883")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not host or not 1 <= port <= 65535:
        raise ConfigError(f"--broker {text!r}: expected HOST or HOST:PORT with a port in 1..65535")
    return host, port
