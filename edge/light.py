"""The attractant light: a relay on one GPIO pin, switched with the schedule.

Why gpiozero is imported inside `LightController.__init__`: only traps with a light need it, and
the desktop (and CI) must import `edge` without it. Tests pass gpiozero's MockFactory as
`pin_factory`, so the real gpiozero code drives a simulated pin whose level can be read back.
"""

from __future__ import annotations

import logging
from typing import Any

from edge.config import LightConfig
from edge.errors import TrapcamError

log = logging.getLogger(__name__)


class LightController:
    """On/off for the light relay; starts off, and is switched off again on close."""

    def __init__(self, cfg: LightConfig, pin_factory: Any | None = None) -> None:
        try:
            from gpiozero import DigitalOutputDevice
            from gpiozero.exc import GPIOZeroError
        except ImportError:
            raise TrapcamError(
                "schedule.light: gpiozero is not installed; install it: `sudo apt install python3-gpiozero` "
                "(Raspberry Pi OS; venv with --system-site-packages) or `pip install gpiozero`"
            ) from None
        self.cfg = cfg
        try:
            self._device = DigitalOutputDevice(
                cfg.gpio_pin, active_high=cfg.active_high, initial_value=False, pin_factory=pin_factory
            )
        except GPIOZeroError as exc:
            raise TrapcamError(f"schedule.light: cannot use GPIO pin {cfg.gpio_pin}: {exc}") from None
        self._closed = False

    def set(self, on: bool) -> None:
        """Switch the light; logs only real changes (the loop calls this every frame)."""
        if self._closed:
            raise TrapcamError(f"schedule.light: GPIO pin {self.cfg.gpio_pin} is closed; cannot switch it")
        if bool(on) == self.is_on:
            return
        if on:
            self._device.on()
        else:
            self._device.off()
        log.info("light on GPIO %d switched %s", self.cfg.gpio_pin, "on" if on else "off")

    @property
    def is_on(self) -> bool:
        """Logical state (active_high is applied by gpiozero: on means the relay is energised)."""
        return not self._closed and bool(self._device.value)

    def close(self) -> None:
        """Switch off and release the pin; idempotent (a stopped trap must not leave the lamp burning)."""
        if self._closed:
            return
        try:
            self._device.off()
        finally:
            self._device.close()
            self._closed = True

    def __enter__(self) -> LightController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["LightController"]
