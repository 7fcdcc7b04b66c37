"""Suite-wide rules: which tests may skip, the list of what skipped, and models trained once.

A test of a real component (TensorFlow, mosquitto, shellcheck, a package of the [dev] extra, a module
of this project) never skips: a missing part is a broken install, and a skip would hide it. Only a
hardware boundary (marker `hardware`: a Coral, a Pi camera, a Jetson, TensorRT, or their absence) and
the optional real material beside the clone (marker `shared_data`) may skip. Under CI (`CI` set to
true, as `.ci/run` runs, or `TRAPCAM_STRICT_SKIPS=1`) any other skip is turned into a failure; on
every run the skipped tests are listed at the end with their reasons.
"""

from __future__ import annotations

import contextlib
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
# The demo's own limit: about three minutes alone on two cores, longer beside the other tests.
DEMO_TIMEOUT_S = 1800.0


def _uses_demo(item: pytest.Item) -> bool:
    return "demo_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """The tests of the demo's output run last, each file's in its own order: the demo then trains
    in the background (`_demo_in_background`) beside the rest of the suite, which keeps one of two
    cores busy most of the time, instead of the suite waiting three minutes for it."""
    items[:] = [i for i in items if not _uses_demo(i)] + [i for i in items if _uses_demo(i)]


class DemoNight:
    """`trapcam demo` in a process of its own, as a newcomer runs it, with a broker and a subscriber.

    Started by the session's first test; `result()` waits for it. Its output goes to files, not
    pipes: nobody reads a pipe while the other tests run, and a full pipe would stall the demo.
    """

    def __init__(self, root: Path) -> None:
        from mqtt_broker import Broker, Subscriber

        self.root = root
        self.out = root / "demo"
        self.broker = Broker(root / "broker")
        self.subscriber: Subscriber | None = None
        self.process: Any = None
        self._result: dict[str, Any] | None = None
        self.failed_to_start = ""
        self.started = 0.0

    def start(self) -> DemoNight:
        import subprocess
        import sys
        import time

        from mqtt_broker import Subscriber

        self.broker.start()
        self.subscriber = Subscriber(self.broker, ["trapcam/demo-trap/#"]).start()
        address = f"{self.broker.host}:{self.broker.port}"
        repo = Path(__file__).resolve().parents[1]
        with open(self.root / "stdout.txt", "wb") as out, open(self.root / "stderr.txt", "wb") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge",
                    "demo",
                    "--out",
                    str(self.out),
                    "--broker",
                    address,
                    *DEMO_NIGHT,
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=repo,
            )
        self.started = time.monotonic()
        return self

    def result(self) -> dict[str, Any]:
        """What the demo printed and wrote, once it has ended (fails the test when it failed)."""
        import subprocess
        import time

        from helpers import query
        from mqtt_broker import wait_until

        if self._result is not None:
            return self._result
        if self.failed_to_start:
            pytest.fail(f"trapcam demo could not be started: {self.failed_to_start}")
        assert self.process is not None and self.subscriber is not None
        try:
            code = self.process.wait(timeout=max(1.0, self.started + DEMO_TIMEOUT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"trapcam demo did not end within {DEMO_TIMEOUT_S:.0f} s")
        stdout = (self.root / "stdout.txt").read_text(encoding="utf-8", errors="replace")
        stderr = (self.root / "stderr.txt").read_text(encoding="utf-8", errors="replace")
        if code != 0:
            pytest.fail(f"trapcam demo exited {code}; its output ended:\n{stdout[-4000:]}\n{stderr[-3000:]}")
        db = self.out / "trap" / "trapcam.db"
        ended = {r[0] for r in query(db, "SELECT track_id FROM tracks WHERE status = 'ended'")}
        sub = self.subscriber
        wait_until(lambda: {m.payload["track_id"] for m in sub.snapshot("trapcam/demo-trap/track")} >= ended)
        published = [m.payload for m in sub.snapshot("trapcam/demo-trap/track")]
        self._result = {
            "code": code,
            "out": self.out,
            "stdout": stdout,
            "stderr": stderr,
            "db": db,
            "published": published,
        }
        return self._result

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.subscriber is not None:
            self.subscriber.stop()
        with contextlib.suppress(Exception):  # a broker that never started
            self.broker.stop()


@pytest.fixture(scope="session", autouse=True)
def _demo_in_background(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoNight | None]:
    """The demo, started with the session's first test when any selected test reads its output."""
    if not any(_uses_demo(item) for item in request.session.items):
        yield None
        return
    demo = DemoNight(tmp_path_factory.mktemp("demo"))
    try:
        demo.start()
    except Exception as exc:  # fails the demo's tests, not every test of the session
        demo.failed_to_start = f"{type(exc).__name__}: {exc}"
    try:
        yield demo
    finally:
        demo.close()


@pytest.fixture(scope="session")
def demo_run(_demo_in_background: DemoNight | None) -> dict[str, Any]:
    """`trapcam demo` once per session (started in the background by the session's first test).

    About three minutes alone on two cores, nearly all of it the demo's training. tests/test_demo.py
    judges what it printed and wrote; tests/test_convert.py converts its trained run again with every
    variant (the demo's model holds convert's default bar, so the convert tests are held to it too),
    so the suite trains this model once instead of training a second one of its own.
    """
    assert _demo_in_background is not None, "no selected test was seen to use demo_run"
    return _demo_in_background.result()
