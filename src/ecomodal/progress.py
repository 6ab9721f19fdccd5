"""One progress bar for every long loop in ecomodal (rich, on stderr)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a rich progress bar with rate and time left when enabled."""
    with progress_bars({description: total}, enabled=enabled) as advance:
        yield advance[description]


@contextlib.contextmanager
def progress_bars(
    totals: dict[str, int | None], *, enabled: bool = True, completed: dict[str, int] | None = None
) -> Iterator[dict[str, Callable[[int], None]]]:
    """One bar per entry of ``totals`` (description -> total); yields description -> advance."""
    if not enabled:
        yield {name: (lambda n: None) for name in totals}
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        advance = {}
        for name, total in totals.items():
            task = progress.add_task(name, total=total, completed=(completed or {}).get(name, 0))
            advance[name] = lambda n, task=task: progress.advance(task, n)
        yield advance
