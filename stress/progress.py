"""The progress bar (rich): tests done, leases held, waiters, hit and reuse rates, refreshed from the
timeline's samples (never per test). Off when stderr is not a terminal (CI logs)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .timeline import Sample

__all__ = ("RunProgress",)


class RunProgress:
    """``with RunProgress(total, "pool") as bar: ... bar.update(sample)``."""

    def __init__(self, total: int, label: str, *, enabled: bool | None = None) -> None:
        console = Console(stderr=True)
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, detail="")

    def update(self, sample: Sample) -> None:
        waiting = sum(sample.waiting.values())
        hit = f"{100 * sample.hits / sample.served:.0f}%" if sample.served else "-"
        reuse = f"{100 * sample.reuses / sample.served:.0f}%" if sample.served else "-"
        detail = (
            f"running {sample.running:>5}  leases {sample.in_use:>4}  waiting {waiting:>5}  "
            f"hit {hit:>4}  reuse {reuse:>4}"
        )
        self._progress.update(self._task, completed=sample.done, detail=detail)

    def finish(self, done: int) -> None:
        self._progress.update(self._task, completed=done)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()
