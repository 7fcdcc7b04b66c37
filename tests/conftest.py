"""Suite-wide rules: which tests may skip, the list of what skipped, and models trained once.

A test of a real component (TensorFlow, mosquitto, shellcheck, a package of the [dev] extra, a module
of this project) never skips: a missing part is a broken install, and a skip would hide it. Only a
hardware boundary (marker `hardware`: a Coral, a Pi camera, a Jetson, TensorRT, or their absence) and
the optional real material beside the clone (marker `shared_data`) may skip. Under CI (`CI` set to
true, as `.ci/run` runs, or `TRAPCAM_STRICT_SKIPS=1`) any other skip is turned into a failure; on
every run the skipped tests are listed at the end with their reasons.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ALLOWED_SKIP_MARKERS = ("hardware", "shared_data")


def strict_skips() -> bool:
    """True under CI: a skip that is not a hardware or shared-data boundary fails the run."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or os.environ.get("TRAPCAM_STRICT_SKIPS", "") == "1"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _may_skip(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in ALLOWED_SKIP_MARKERS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    allowed = _may_skip(item)
    item.config.stash.setdefault(_SKIPS, []).append((item.nodeid, reason, allowed))
    if strict_skips() and not allowed:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI, which only hardware or shared-data boundaries may do: {reason} "
            "(a missing package or project module is a broken install)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A whole module skipped at import (importorskip) is a missing part: fail it under CI."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and strict_skips():
        reason = _skip_reason(report)  # type: ignore[arg-type]
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI: {reason} (a missing package is a broken install)"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skips = config.stash.get(_SKIPS, [])
    if not skips:
        return
    terminalreporter.section(f"skipped: {len(skips)} test(s)")
    for nodeid, reason, allowed in skips:
        kind = "boundary" if allowed else ("FAILED under CI" if strict_skips() else "NOT a boundary")
        terminalreporter.write_line(f"{nodeid}: {reason} [{kind}]")


_SKIPS = pytest.StashKey[list[tuple[str, str, bool]]]()


# ---------------------------------------------------------------- models trained once per session


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """train(config) -> run folder, trained once per test session for each distinct config.

    `config` is a training YAML whose `run_dir` is the placeholder `{run_dir}` (e.g. from
    `train.presets.synthetic_run_config(Path("{run_dir}"), ...)`). Tests that need the same model
    share one training instead of each paying a minute of CPU for it.
    """
    cache: dict[str, Path] = {}

    def get(config: str) -> Path:
        if config not in cache:
            from train.config import parse_train_config
            from train.run import train

            work = tmp_path_factory.mktemp("trained")
            run_dir = work / "run"
            train(parse_train_config(config.replace("{run_dir}", str(run_dir)), "test training config"))
            cache[config] = run_dir
        return cache[config]

    return get


# ---------------------------------------------------------------- the demo, run once per session

# A shorter night than the demo's default (10 minutes, 8 insect visits): the night does not change
# the model, and the model is trained at the demo's own default settings.
DEMO_NIGHT = ["--frames", "120", "--insects", "8"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`trapcam demo` once per session, in a process of its own as a newcomer runs it, with a broker.

    About three minutes on two cores, nearly all of it the demo's training. tests/test_demo.py judges
    what it printed and wrote; tests/test_convert.py converts its trained run again with every variant
    (the demo's model holds convert's default bar, so the convert tests are held to it too), so the
    suite trains this model once instead of training a second one of its own.
    """
    import subprocess
    import sys

    from helpers import query
    from mqtt_broker import Broker, Subscriber, wait_until

    root = tmp_path_factory.mktemp("demo")
    out = root / "demo"
    repo = Path(__file__).resolve().parents[1]
    with Broker(root / "broker") as broker, Subscriber(broker, ["trapcam/demo-trap/#"]) as sub:
        address = f"{broker.host}:{broker.port}"
        done = subprocess.run(
            [sys.executable, "-m", "edge", "demo", "--out", str(out), "--broker", address, *DEMO_NIGHT],
            capture_output=True,
            text=True,
            cwd=repo,
            timeout=1400,
        )
        if done.returncode != 0:
            pytest.fail(
                f"trapcam demo exited {done.returncode}; its output ended:\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
            )
        db = out / "trap" / "trapcam.db"
        ended = {r[0] for r in query(db, "SELECT track_id FROM tracks WHERE status = 'ended'")}
        wait_until(lambda: {m.payload["track_id"] for m in sub.snapshot("trapcam/demo-trap/track")} >= ended)
        published = [m.payload for m in sub.snapshot("trapcam/demo-trap/track")]
    return {
        "code": done.returncode,
        "out": out,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "db": db,
        "published": published,
    }
