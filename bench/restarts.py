"""A month alone, in minutes: a synthetic night killed with SIGKILL at random moments, and a full disk.

Part 1, restarts (any machine): each seed runs the night once unbroken, then again into a fresh
data folder with `--kills` SIGKILLs at random moments (each killed `trapcam run` restarted at
once, as systemd would), then replays it once more into that folder. Printed: the exported
insects and effort of each, against the unbroken night.

Part 2, a full disk (root only: it mounts a 24 MB tmpfs): starting on a disk another program
filled, a disk filled mid-run, a SIGTERM while the writer fails with no reserve and nothing to
delete, and a start with nothing left to free. Printed: exit code, seconds, and the last line.

    python -m bench.restarts                     # seeds 1-3, 4 kills each, ~3 min; disk part if root
    python -m bench.restarts --seeds 1 --no-disk
    python -m bench.restarts --no-disk --lamp-on   # with the light-trap example's lamp-on sheet
    python -m bench.restarts --root /path/to/an/older/checkout --no-disk   # restarts on other code
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NIGHT = "kind: synthetic, width: 640, height: 360, frames: 400, insects: 30, frame_interval_s: 0.05"


def _query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _counts(db: Path) -> tuple[int, float]:
    """Finished tracks and effort, as the exports read them (all runs)."""
    tracks = _query(db, "SELECT COUNT(*) FROM tracks WHERE status = 'ended'")[0][0]
    effort = _query(db, "SELECT COALESCE(SUM(effort_s), 0) FROM summaries")[0][0]
    return int(tracks), float(effort)


def _run(root: Path, config: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


# The light-trap example's setting: the first frame after the lamp goes on is the night's empty sheet
# (stored, and read again by a restart that night), so a restarted detector sees moths already sitting.
LAMP_ON = 'detector: {sheet_reference: lamp_on}\nschedule: {windows: [{start: "21:30", end: "05:00"}]}\n'


def _start(root: Path, config: Path, output: int) -> subprocess.Popen[str]:
    """`trapcam run` in the background (output: subprocess.PIPE to read it, DEVNULL to drop it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=root,
        stdout=output,
        stderr=output,
        text=True,
    )


def _config(folder: Path, seed: int, realtime: bool, lamp_on: bool = False) -> Path:
    config = folder / "trap.yaml"
    config.write_text(
        f"data_dir: {folder / 'data'}\nsource: {{{NIGHT}, seed: {seed}, realtime: {str(realtime).lower()}}}\n"
        "storage: {flush_interval_s: 0.2}\n" + (LAMP_ON if lamp_on else "")
    )
    return config


def restarts(root: Path, seeds: list[int], kills: int, lamp_on: bool = False) -> None:
    print(f"{'seed':>4} | {'unbroken':>14} | {f'{kills} SIGKILLs':>14} | {'replayed again':>14}")
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            whole = Path(tmp) / "whole"
            whole.mkdir()
            _run(root, _config(whole, seed, realtime=False, lamp_on=lamp_on))
            base = _counts(whole / "data" / "trapcam.db")
            killed = Path(tmp) / "killed"
            killed.mkdir()
            config = _config(killed, seed, realtime=True, lamp_on=lamp_on)
            rng = random.Random(seed)
            for _ in range(kills):
                trap = _start(root, config, subprocess.DEVNULL)
                time.sleep(rng.uniform(4, 8))
                trap.send_signal(signal.SIGKILL)
                trap.wait()
            _run(root, config)
            db = killed / "data" / "trapcam.db"
            after = _counts(db)
            _run(root, config)
            again = _counts(db)
        cells = [f"{n:3d} ins. {e:5.2f} s" for n, e in (base, after, again)]
        print(f"{seed:>4} | " + " | ".join(f"{c:>14}" for c in cells))


def _fill(disk: Path) -> None:
    with contextlib.suppress(OSError), open(disk / f"other-{time.monotonic_ns()}", "wb") as f:
        while True:
            f.write(bytes(65536))
            f.flush()


def _say(what: str, code: int, seconds: float, stderr: str) -> None:
    print(f"{what:<27} exit {code} after {seconds:5.1f} s  {_last(stderr)}")


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:160] if lines else ""


def disk_full(root: Path) -> None:
    if os.geteuid() != 0:
        print("disk part skipped: mounting a small filesystem needs root")
        return
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
        try:
            config = Path(tmp) / "trap.yaml"
            data = disk / "data"

            def write(source: str, storage: str = "") -> None:
                config.write_text(
                    f"data_dir: {data}\nsource: {{{source}}}\nstorage: {{flush_interval_s: 0.2{storage}}}\n"
                    "retention: {min_free_gb: 0.004, check_interval_s: 600}\n"
                )

            small = "kind: synthetic, width: 640, height: 360, insects: 20"
            write(f"{small}, frames: 200, seed: 1", ", crop_every_s: 0")
            _run(root, config)
            _fill(disk)
            write(f"{small}, frames: 400, seed: 2")
            t = time.monotonic()
            out = _run(root, config, timeout=300)
            _say("start on a full disk:", out.returncode, time.monotonic() - t, out.stderr)
            for f in disk.glob("other-*"):
                f.unlink()

            write(
                f"{small}, frames: 1200, seed: 3, realtime: true, frame_interval_s: 0.02", ", crop_every_s: 0"
            )
            trap = _start(root, config, subprocess.PIPE)
            time.sleep(6)
            _fill(disk)
            stdout, stderr = trap.communicate(timeout=300)
            rows = _query(data / "trapcam.db", "SELECT COUNT(*) FROM detections WHERE run_id = 3")[0][0]
            said = [
                line.strip() for line in stdout.splitlines() if "disk full" in line or "detections" in line
            ]
            print(f"{'disk filled mid-run:':<27} exit {trap.returncode}; {rows} rows; {' / '.join(said)}")
            for f in disk.glob("other-*"):
                f.unlink()

            subprocess.run(["umount", str(disk)], check=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
            write(
                f"{small}, frames: 100000, seed: 4, realtime: true, frame_interval_s: 0.02",
                ", save_crops: false, reserve_mb: 0",
            )
            trap = _start(root, config, subprocess.PIPE)
            time.sleep(5)
            _fill(disk)
            time.sleep(6)
            t = time.monotonic()
            trap.send_signal(signal.SIGTERM)
            try:
                _, stderr = trap.communicate(timeout=180)
                _say("SIGTERM while full:", trap.returncode, time.monotonic() - t, stderr)
            except subprocess.TimeoutExpired:
                trap.kill()
                print("SIGTERM while full:         still running after 180 s")

            write(f"{small}, frames: 50, seed: 5", ", save_crops: false, reserve_mb: 0")
            t = time.monotonic()
            out = _run(root, config, timeout=300)
            _say("start with nothing to free:", out.returncode, time.monotonic() - t, out.stderr)
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--no-disk", action="store_true", help="skip the full-disk part")
    parser.add_argument(
        "--lamp-on", action="store_true", help="detector.sheet_reference: lamp_on, as the light-trap example"
    )
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout whose trapcam runs")
    args = parser.parse_args()
    restarts(args.root, args.seeds, args.kills, args.lamp_on)
    if not args.no_disk:
        disk_full(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
