"""How long this process has been running, from the kernel's own record of its start.

Why: "first frame after 0.04 s" measured from `Pipeline.run()` hid the 1.5-3 s a trap really takes
from `trapcam run` to its first frame (interpreter start, imports, model load). A user restarting a
trap, or a watchdog timeout, needs the time from the process's start.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_age_s(proc: Path = Path("/proc")) -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat against /proc/uptime, 10 ms
    resolution); None where the kernel does not say (not Linux)."""
    try:
        stat = (proc / "self" / "stat").read_text()
        uptime = float((proc / "uptime").read_text().split()[0])
        # field 22 (starttime, clock ticks after boot); fields are counted after the ")" that ends
        # the command name, which may itself hold spaces
        fields = stat.rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)
