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
import json
import os
import threading
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
    report.user_properties.append(("skipped", (reason, allowed)))  # for the list at the end (xdist too)
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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collects the skips for the list at the end; runs where the terminal is (xdist's controller)."""
    skipped = dict(report.user_properties).get("skipped")
    if skipped is not None:
        reason, allowed = skipped
        _SKIPPED.append((report.nodeid, str(reason), bool(allowed)))


_SKIPPED: list[tuple[str, str, bool]] = []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skips = _SKIPPED
    if not skips:
        return
    terminalreporter.section(f"skipped: {len(skips)} test(s)")
    for nodeid, reason, allowed in skips:
        kind = "boundary" if allowed else ("FAILED under CI" if strict_skips() else "NOT a boundary")
        terminalreporter.write_line(f"{nodeid}: {reason} [{kind}]")


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


def _xdist_worker() -> bool:
    """True in a pytest-xdist worker (the README's test command runs the suite on every core)."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Order the session around the demo, the one test input that takes minutes.

    The demo starts with the session's first test and trains in the background
    (`_demo_in_background`); the tests of its output come as late as they can, so they seldom wait.
    Alone: they run last, each file's in its own order. Under xdist (`--dist loadfile`: a file is
    one worker's unit, so its module fixtures are built once) each file keeps its place, its
    demo tests last within it, and a file of demo tests only goes last.
    """
    late = [i for i in items if _uses_demo(i)]
    if not late:
        return
    if not _xdist_worker():
        items[:] = [i for i in items if not _uses_demo(i)] + late
        return
    files: dict[Path, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    ordered = sorted(files.values(), key=lambda group: all(_uses_demo(i) for i in group))
    items[:] = [
        i
        for group in ordered
        for i in [*filter(lambda i: not _uses_demo(i), group), *filter(_uses_demo, group)]
    ]


class DemoNight:
    """`trapcam demo` in a process of its own, as a newcomer runs it, with a broker and a subscriber.

    One process of the session starts it (under xdist, the first worker to begin); a thread there
    waits for it and writes what it printed and published to `result.json` (or why it failed to
    `failed.txt`) in a folder every worker sees, where `demo_run` reads it. Its output goes to files,
    not pipes: nobody reads a pipe while the other tests run, and a full pipe would stall the demo.
    """

    def __init__(self, root: Path) -> None:
        from mqtt_broker import Broker

        self.root = root
        self.out = root / "demo"
        self.broker = Broker(root / "broker")
        self.subscriber: Any = None
        self.process: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the broker, the subscriber, the demo and the thread that waits for it; on any
        failure `failed.txt` says why (the demo's tests fail, not every test of the session)."""
        import subprocess
        import sys

        from mqtt_broker import Subscriber

        try:
            self.broker.start()
            self.subscriber = Subscriber(self.broker, ["trapcam/demo-trap/#"]).start()
            address = f"{self.broker.host}:{self.broker.port}"
            repo = Path(__file__).resolve().parents[1]
            command = [sys.executable, "-m", "edge", "demo", "--out", str(self.out), "--broker", address]
            with open(self.root / "stdout.txt", "wb") as out, open(self.root / "stderr.txt", "wb") as err:
                self.process = subprocess.Popen(
                    [*command, *DEMO_NIGHT], stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=repo
                )
        except Exception as exc:
            self._failed(f"trapcam demo could not be started: {type(exc).__name__}: {exc}")
            return
        self.thread = threading.Thread(target=self._wait, name="demo", daemon=True)
        self.thread.start()

    def _failed(self, why: str) -> None:
        (self.root / "failed.txt").write_text(why, encoding="utf-8")

    def _wait(self) -> None:
        import subprocess

        from helpers import query
        from mqtt_broker import wait_until

        try:
            code = self.process.wait(timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self._failed(f"trapcam demo did not end within {DEMO_TIMEOUT_S:.0f} s")
            return
        stdout = (self.root / "stdout.txt").read_text(encoding="utf-8", errors="replace")
        stderr = (self.root / "stderr.txt").read_text(encoding="utf-8", errors="replace")
        if code != 0:
            self._failed(f"trapcam demo exited {code}; its output ended:\n{stdout[-4000:]}\n{stderr[-3000:]}")
            return
        try:
            db = self.out / "trap" / "trapcam.db"
            ended = {r[0] for r in query(db, "SELECT track_id FROM tracks WHERE status = 'ended'")}
            sub = self.subscriber
            wait_until(
                lambda: {m.payload["track_id"] for m in sub.snapshot("trapcam/demo-trap/track")} >= ended
            )
            published = [m.payload for m in sub.snapshot("trapcam/demo-trap/track")]
        except Exception as exc:
            self._failed(f"the demo's tracks did not all reach the broker: {type(exc).__name__}: {exc}")
            return
        result = {"code": code, "out": str(self.out), "stdout": stdout, "stderr": stderr, "db": str(db)}
        written = self.root / "result.json.part"
        written.write_text(json.dumps({**result, "published": published}), encoding="utf-8")
        written.replace(self.root / "result.json")

    def close(self) -> None:
        """At the end of the starting process's session: the demo is waited for (other workers may
        still need it), then the broker goes."""
        if self.thread is not None:
            self.thread.join(DEMO_TIMEOUT_S)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.subscriber is not None:
            self.subscriber.stop()
        with contextlib.suppress(Exception):  # a broker that never started
            self.broker.stop()


def _demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's folder, one for the session: beside the workers' own under xdist."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if _xdist_worker() else base) / "trapcam-demo"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _demo_in_background(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The demo, started with the session's first test when any collected test reads its output;
    under xdist by the first worker to begin (a lock and a marker file decide)."""
    if not any(_uses_demo(item) for item in request.session.items):
        yield
        return
    import fcntl

    root = _demo_folder(tmp_path_factory)
    with open(root / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        starter = not (root / "started").exists()
        if starter:
            (root / "started").touch()
    if not starter:
        yield
        return
    demo = DemoNight(root)
    demo.start()
    try:
        yield
    finally:
        demo.close()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`trapcam demo` once per session, as started by `_demo_in_background`: waits for its end.

    About three minutes alone on two cores, nearly all of it the demo's training. tests/test_demo.py
    judges what it printed and wrote; tests/test_convert.py converts its trained run again with every
    variant (the demo's model holds convert's default bar, so the convert tests are held to it too),
    so the suite trains this model once instead of training a second one of its own.
    """
    import time

    root = _demo_folder(tmp_path_factory)
    deadline = time.monotonic() + DEMO_TIMEOUT_S + 120
    while time.monotonic() < deadline:
        if (root / "failed.txt").exists():
            pytest.fail((root / "failed.txt").read_text(encoding="utf-8"))
        if (root / "result.json").exists():
            result = json.loads((root / "result.json").read_text(encoding="utf-8"))
            return {**result, "out": Path(result["out"]), "db": Path(result["db"])}
        if not (root / "started").exists():
            pytest.fail(f"nobody started the demo ({root}): was demo_run used outside a test?")
        time.sleep(0.5)
    pytest.fail(f"the demo gave no result within {DEMO_TIMEOUT_S + 120:.0f} s ({root})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After a passing session the demo's folder goes, like the folders of passed tests (its trap
    holds a reserve file); after a failure it stays for a look. Under xdist the controller does it,
    once every worker is done with it."""
    import shutil

    factory = getattr(session.config, "_tmp_path_factory", None)
    if _xdist_worker() or exitstatus != 0 or factory is None:
        return
    shutil.rmtree(factory.getbasetemp() / "trapcam-demo", ignore_errors=True)
