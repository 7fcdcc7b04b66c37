"""`trapcam install-service`: the unit files in edge/systemd/, filled in for this machine and config.

They are package data, so an installed wheel has them: no checkout is needed on the trap.

Why render instead of shipping finished units: ExecStart needs the absolute path of this venv's
`trapcam`, ReadWritePaths the absolute data directory of *this* config (ProtectSystem=strict makes
everything else read-only, so a wrong path means a trap that cannot write), WatchdogSec must exceed
the camera's own interval, and the export timer runs after the configured day boundary in the
site's time zone. Nothing here needs root: the files go to --out (default /etc/systemd/system, so
run it with sudo, or use --out and copy them); the commands that need root are printed, not run.
"""

from __future__ import annotations

import grp
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from edge.config import TrapConfig
from edge.errors import ConfigError, TrapcamError

UNITS = ("trapcam.service", "trapcam-export.service", "trapcam-export.timer")
TEMPLATE_DIR = Path(__file__).resolve().parent / "systemd"
# Groups that give a service user the camera, the GPIO pins and a Coral (used where present).
DEVICE_GROUPS = ("video", "gpio", "i2c", "plugdev", "apex")  # camera, GPIO, Coral USB and PCIe
MIN_WATCHDOG_S = 120


class ServiceError(TrapcamError):
    """The unit files cannot be rendered or written."""


@dataclass(frozen=True)
class ServiceSettings:
    """The values that fill the unit templates' @FIELDS@."""

    trapcam: str
    config: Path
    user: str
    groups: tuple[str, ...]
    data_dir: Path
    export_dir: Path
    watchdog_s: int
    timeout_start_s: int
    export_time: str  # "12:30 Europe/Berlin"
    docs: Path

    def fields(self) -> dict[str, str]:
        return {
            "TRAPCAM": self.trapcam,
            "CONFIG": str(self.config),
            "USER": self.user,
            "GROUPS": " ".join(self.groups),
            "DATA_DIR": str(self.data_dir),
            "EXPORT_DIR": str(self.export_dir),
            "WATCHDOG_SEC": str(self.watchdog_s),
            "TIMEOUT_START_SEC": str(self.timeout_start_s),
            "EXPORT_TIME": self.export_time,
            "DOCS": str(self.docs),
        }


def trapcam_command() -> str:
    """The absolute `trapcam` of this environment (the venv the service must use)."""
    script = Path(sys.executable).parent / "trapcam"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    return f"{sys.executable} -m edge"


def watchdog_seconds(cfg: TrapConfig) -> int:
    """Longer than the loop's own stall exit and three camera intervals: the watchdog is the backstop
    for a hang the loop cannot see, not a second stall timer."""
    source = cfg.source
    return int(max(MIN_WATCHDOG_S, source.stall_timeout_s + 60, 3 * source.interval_s))


def export_time(cfg: TrapConfig) -> str:
    """30 minutes after the export day ends, in the site's time zone (systemd OnCalendar syntax)."""
    start = datetime.strptime(cfg.export.day_starts_at, "%H:%M") + timedelta(minutes=30)
    return f"{start:%H:%M} {cfg.site.timezone}"


def settings_for(cfg: TrapConfig, config_path: Path, user: str = "trapcam") -> ServiceSettings:
    if not user or not user.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--user {user!r}: expected a plain user name such as 'trapcam'")
    data_dir = cfg.data_dir.resolve()
    groups = []
    for name in DEVICE_GROUPS:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        groups.append(name)
    return ServiceSettings(
        trapcam=trapcam_command(),
        config=Path(config_path).resolve(),
        user=user,
        groups=tuple(groups),
        data_dir=data_dir,
        export_dir=cfg.export_path.resolve(),
        watchdog_s=watchdog_seconds(cfg),
        # the first start on a Jetson builds the TensorRT engine (minutes); later starts load it
        timeout_start_s=1800 if cfg.classifier.enabled and cfg.classifier.backend == "tensorrt" else 180,
        export_time=export_time(cfg),
        docs=TEMPLATE_DIR / "README.md",
    )


def render(template: str, settings: ServiceSettings) -> str:
    """Replace every @FIELD@; a field left over is a bug in the template, not a user error."""
    text = template
    for key, value in settings.fields().items():
        text = text.replace(f"@{key}@", value)
    if "@" in "".join(line for line in text.splitlines() if not line.lstrip().startswith("#")):
        left = [w for w in text.split() if w.startswith("@") and w.endswith("@")]
        raise ServiceError(f"unit template field(s) not filled: {left}")
    return text


def render_units(settings: ServiceSettings, template_dir: Path = TEMPLATE_DIR) -> dict[str, str]:
    units = {}
    for name in UNITS:
        path = template_dir / name
        try:
            units[name] = render(path.read_text(encoding="utf-8"), settings)
        except FileNotFoundError:
            raise ServiceError(
                f"{path}: unit template not found: this trapcam installation is incomplete "
                "(reinstall it: pip install --force-reinstall 'trapcam[edge]')"
            ) from None
    return units


def write_units(units: dict[str, str], out_dir: Path) -> list[Path]:
    """Write each unit atomically (temp file + rename) so systemd never reads half a file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"{out_dir}: cannot create it: {exc.strerror or exc} (run with sudo?)") from None
    written = []
    for name, text in units.items():
        target = out_dir / name
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            raise ServiceError(f"{target}: cannot write it: {exc.strerror or exc} (run with sudo?)") from None
        written.append(target)
    return written


def next_steps(settings: ServiceSettings, out_dir: Path) -> list[str]:
    """The root commands that finish the installation (printed; trapcam does not run them)."""
    groups = f" --groups {','.join(settings.groups)}" if settings.groups else ""
    steps = [
        f"sudo useradd --system --home-dir {settings.data_dir} --shell /usr/sbin/nologin{groups}"
        f" {settings.user}",
        f"sudo install -d -o {settings.user} -g {settings.user} {settings.data_dir}",
    ]
    if settings.export_dir != settings.data_dir and settings.data_dir not in settings.export_dir.parents:
        steps.append(f"sudo install -d -o {settings.user} -g {settings.user} {settings.export_dir}")
    if out_dir != Path("/etc/systemd/system"):
        steps.append(f"sudo cp {' '.join(str(out_dir / n) for n in UNITS)} /etc/systemd/system/")
    steps += [
        "sudo systemctl daemon-reload",
        "sudo systemctl enable --now trapcam.service trapcam-export.timer",
        "journalctl -u trapcam -f    # follow the log; `systemctl status trapcam` shows the last health line",
    ]
    if shutil.which("systemctl") is None:
        steps.append("(systemctl was not found here: copy the units to the trap and run these there)")
    return steps
