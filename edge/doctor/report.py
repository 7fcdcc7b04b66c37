"""The doctor's report: one line per check, a verdict, and the exit code."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import edge

Status = Literal["ok", "missing", "warning", "fail"]

STATUSES: tuple[Status, ...] = ("ok", "missing", "warning", "fail")


@dataclass
class Check:
    """One line of the report: section, what was checked, the verdict, and a detail for a person."""

    section: str
    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    """All checks, the verdict, and the exit code (1 when the configured setup would not run)."""

    checks: list[Check]
    config: str | None
    would_run: bool
    verdict: str
    # section -> why the config does not use it: the table shows such a section as one line (a CPU
    # trap on a synthetic night is not "missing" a Coral, a GPU and a camera); --json keeps every check
    unused: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.would_run else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": edge.__version__,
            "host": {
                "machine": platform.machine(),
                "system": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            },
            "config": self.config,
            "would_run": self.would_run,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "unused_sections": dict(self.unused),
            "checks": [asdict(c) for c in self.checks],
        }

    def render(self) -> str:
        """A table: one line per check (status, name, detail), grouped by section, then the verdict."""
        width = max((len(c.name) for c in self.checks), default=8)
        lines = [
            f"trapcam doctor {edge.__version__}: {platform.machine()}, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
        ]
        section = None
        shown: list[Check] = []
        for check in self.checks:
            if check.section != section:
                section = check.section
                lines.append(f"\n{section}")
                if section in self.unused:
                    hidden = [c for c in self.checks if c.section == section]
                    found = sum(c.status == "ok" for c in hidden)
                    lines.append(
                        f"  {'-':<8} {'not used':<{width}}  {self.unused[section]}: {len(hidden)} readings "
                        f"({found} found) not shown; `trapcam doctor` without --config lists them"
                    )
            if check.section in self.unused:
                continue
            shown.append(check)
            lines.append(f"  {check.status:<8} {check.name:<{width}}  {check.detail}")
        counts = {s: sum(c.status == s for c in shown) for s in STATUSES}
        lines.append("")
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        if self.unused:
            summary += f"; not used by this config: {', '.join(self.unused)}"
        lines.append(summary)
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)
