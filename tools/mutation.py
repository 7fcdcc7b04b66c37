"""Mutation testing of one module: how many deliberate small bugs do its tests catch? (issue 26)

    python tools/mutation.py edge/export/csvsafe.py --tests tests/test_export.py
    python tools/mutation.py edge/intervals.py --tests tests/test_intervals.py tests/test_export.py -j 2

Line coverage says a line ran; a mutation score says a test noticed the line being wrong. This runs
mutmut (installed into this interpreter on first use: `mutmut>=3.8,<4`, kept out of the project's
dependencies because CI never runs it) on a copy of the checkout (tracked files and new ones git
does not ignore) in a temporary folder, so the working tree is never touched, mutating only
MODULE and running only the tests named (each mutant runs the tests that reach the mutated
function). Printed: caught / total and every surviving mutant's name, for `mutmut show NAME` in
the copy (`--keep DIR` keeps it; `--diffs` prints each survivor's change). A mutant that makes the
tests hang (mutmut's "timeout") counts as caught: the suite does not pass with it.

Outside CI: a module takes seconds to tens of minutes on 2 cores, depending on its tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MUTMUT = "mutmut>=3.8,<4"
# What the copy needs besides the module's own package: every top-level folder the tests import.
COPIED = ("edge", "train", "convert", "demo", "tests", "examples", "bench", "hardware", "tools")


CAUGHT = ("killed", "timeout")


class MutationError(Exception):
    """Bad arguments or a run that could not start; one line."""


def _check(module: str, tests: list[str], keep: Path | None) -> None:
    if not (REPO / module).is_file() or not module.endswith(".py"):
        raise MutationError(f"{module}: not a Python file of this checkout (give it relative to {REPO})")
    for test in tests:
        if not (REPO / test.split("::")[0]).is_file():
            raise MutationError(f"--tests {test}: no such test file in this checkout")
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise MutationError(f"--keep {keep}: the folder is not empty; remove it or name a new one")


def _copy_checkout(work: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) under work/main."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    copy = work / "main"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if (REPO.parent / "shared").is_dir():
        (work / "shared").symlink_to(REPO.parent / "shared")
    return copy


def _configure(copy: Path, module: str, tests: list[str]) -> None:
    quoted = ", ".join(f'"{t}"' for t in tests)
    copied = ", ".join(f'"{c}"' for c in COPIED)
    with (copy / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(
            "\n[tool.mutmut]\n"
            f'source_paths = ["{module}"]\n'
            f"pytest_add_cli_args_test_selection = [{quoted}]\n"
            f"also_copy = [{copied}]\n"
        )


def _ensure_mutmut() -> None:
    if importlib.util.find_spec("mutmut") is None:
        print(f"installing {MUTMUT} into {sys.prefix} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", MUTMUT], check=True)


def run(module: str, tests: list[str], jobs: int, keep: Path | None, diffs: bool = False) -> str:
    """Mutate `module`, run `tests` against each mutant; the report (score and survivors)."""
    _check(module, tests, keep)
    _ensure_mutmut()
    work = keep or Path(tempfile.mkdtemp(prefix="trapcam-mutation-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        copy = _copy_checkout(work)
        _configure(copy, module, tests)
        mutmut = [sys.executable, "-m", "mutmut"]
        done = subprocess.run(
            [*mutmut, "run", "--max-children", str(jobs)], cwd=copy, capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = " ".join(done.stdout.replace("\r", "\n").splitlines()[-3:] + done.stderr.splitlines()[-3:])
            raise MutationError(f"mutmut run exited {done.returncode}: {tail}")
        results = subprocess.run(
            [*mutmut, "results", "--all", "true"], cwd=copy, capture_output=True, text=True, check=True
        ).stdout
        # every mutant and its state; "no tests" (no named test reaches the function) is a survivor
        states = dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", results, flags=re.M))
        caught = sum(1 for s in states.values() if s in CAUGHT)
        hung = sum(1 for s in states.values() if s == "timeout")
        survivors = sorted(name for name, s in states.items() if s not in CAUGHT)
        lines = [
            f"{module}: {caught} of {len(states)} mutants caught"
            f" ({caught / max(len(states), 1):.0%}; {hung} of them by hanging the tests) by {' '.join(tests)}"
        ]
        for name in survivors:
            lines.append(f"  {states[name]}: {name}")
            if diffs:
                lines += [f"    {line}" for line in _diff(mutmut, copy, name)]
        if keep:
            lines.append(f"the copy (for `mutmut show NAME` there): {copy}")
        return "\n".join(lines)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _diff(mutmut: list[str], copy: Path, name: str) -> list[str]:
    """The changed lines of one mutant (`mutmut show`), without the diff's headers."""
    shown = subprocess.run([*mutmut, "show", name], cwd=copy, capture_output=True, text=True).stdout
    return [line for line in shown.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="the file to mutate, relative to the checkout (edge/intervals.py)")
    parser.add_argument(
        "--tests", nargs="+", required=True, help="test files (or node ids) that run against each mutant"
    )
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--keep", type=Path, help="work in this folder (new or empty) and keep it")
    parser.add_argument("--diffs", action="store_true", help="print each surviving mutant's changed lines")
    args = parser.parse_args(argv)
    try:
        print(run(args.module, args.tests, args.jobs, args.keep, args.diffs))
    except MutationError as exc:
        print(f"mutation: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
