"""The broker password: where it comes from, and keeping it out of every log line.

Why three sources: a password in the YAML ends up in backups and in the run's config snapshot,
so `password_env` (systemd `Environment=`/`LoadCredential=`) and `password_file` (readable by the
service user only) are preferred. A missing variable or unreadable file is a configuration error
found at start, named, never a silent anonymous connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from edge.config import MqttConfig
from edge.errors import ConfigError

REDACTED = "***"


def resolve_password(cfg: MqttConfig) -> str | None:
    """The password from `password`, `password_env` or `password_file` (None: no password)."""
    if cfg.password is not None:
        return cfg.password
    if cfg.password_env is not None:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise ConfigError(
                f"mqtt.password_env: environment variable {cfg.password_env} is not set; "
                f"expected it to hold the MQTT password"
            )
        return value
    if cfg.password_file is not None:
        return _read_password_file(Path(cfg.password_file))
    return None


def _read_password_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"mqtt.password_file: cannot read {path}: {reason}") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"mqtt.password_file: {path} is empty; expected the password on its first line")
    return lines[0]


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced by ***; used on each logged and reported string."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
