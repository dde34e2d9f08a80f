"""Terminal output: rich consoles, progress bars, tables and JSON for scripts.

Progress bars and messages go to stderr so that stdout carries only results
(tables, or one JSON object with ``--json``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

T = TypeVar("T")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

_quiet = False


def esc(value: Any) -> str:
    """``value`` as text that rich prints literally: ``[b]`` or ``[/]`` in a path, a name or
    anything read from a file is never taken as markup. Every user- or file-derived string
    interpolated into a message printed through rich goes through this (tables and progress
    descriptions do it themselves)."""
    return escape(str(value))


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and informational messages (results still print)."""
    global _quiet
    _quiet = quiet


def info(message: str) -> None:
    """An informational line on stderr (the a2lc commands it suggests name this run's workspace)."""
    if not _quiet:
        from .hints import localise

        err.print(localise(message))


def warn(message: str) -> None:
    """A ``warning: ...`` line on stderr (shown even with -q: it names a likely mistake)."""
    from rich.text import Text

    err.print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)


def progress(items: Iterable[T], description: str, *, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` under a rich progress bar on stderr."""
    if total is None and isinstance(items, Sequence):
        total = len(items)
    if _quiet:
        yield from items
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(esc(description), total=total)
        for item in items:
            yield item
            bar.advance(task)


class ProgressBar:
    """A progress bar advanced by hand, for loops that are not a single iterable.

    ``advance(n, status="loss 0.123")`` shows a short status (e.g. the loss) after the counts.
    """

    def __init__(self, description: str, total: int | None):
        self._bar = None if _quiet else Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=err,
        )
        self._description = description
        self._total = total

    def __enter__(self) -> "ProgressBar":
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(esc(self._description), total=self._total, status="")
        return self

    def advance(self, n: int = 1, *, description: str | None = None, status: str | None = None) -> None:
        if self._bar is not None:
            extra = {} if status is None else {"status": esc(status)}
            self._bar.update(self._task, advance=n, description=esc(description or self._description), **extra)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``1 answer``, ``2 answers`` (``plural_form`` for irregular nouns)."""
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """Build a rich table; numbers are right-aligned, floats printed with 2 decimals; text is literal (escaped)."""
    t = Table(title=None if title is None else esc(title), title_justify="left")
    rows = [list(r) for r in rows]
    for j, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[j], (int, float)) or r[j] is None for r in rows)
        t.add_column(esc(name), justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}"
    return esc(v)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (for ``--json``)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
