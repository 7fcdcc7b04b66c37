"""What the demo shows while it works: numbered steps, progress bars and tables (rich).

One `Steps` object owns the console, so every step prints the same way and tests can capture it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Steps:
    """Numbered steps ("[2/6] int8 bundle") with one progress bar at a time."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.total = total
        self.done = 0
        self.console = console or Console(highlight=False)

    def step(self, title: str) -> None:
        """Start the next step: prints its number and title."""
        self.done += 1
        self.console.print()
        self.console.print(f"[bold][{self.done}/{self.total}] {title}[/bold]")

    def say(self, text: str = "") -> None:
        """One line as it is: no markup, no wrapping (tables and paths stay whole in logs)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """A progress bar; yields `advance(n=1, note=None)`, which also updates the bar's note."""
        progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.console,
            transient=False,
        )
        task = progress.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str | None = None) -> None:
            fields: dict[str, Any] = {} if note is None else {"note": note}
            progress.update(task, advance=n, **fields)

        with progress:
            yield advance
            progress.update(task, completed=progress.tasks[0].total)


def epoch_callback(advance: Callable[..., None], levels: tuple[str, ...]) -> Any:
    """A Keras callback that moves the training bar one epoch and shows validation accuracy.

    Built on demand: importing Keras belongs to the training step, not to `trapcam --help`.
    """
    import keras

    finest = levels[-1]

    class EpochBar(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            key = f"val_{finest}_accuracy" if len(levels) > 1 else "val_accuracy"
            value = logs.get(key)
            advance(1, f"{finest} accuracy (validation) {value:.2f}" if value is not None else None)

    return EpochBar()
