"""Backup of people's answers: every row of every round's answer log as one CSV file.

The answer logs live in ``rounds/rNNN/query.h5`` (append-only, checksummed, see
docs/state.md). This export is a plain-text copy for safekeeping and for other
tools; the rows of one round with ``current`` = 1 (``--r R --current``) form an
answers file that ``a2lc query --r R --answers FILE`` imports again.
"""

from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path
from typing import Any

import numpy as np

from .csvio import write_rows
from .errors import A2LCError
from .state import UNITS, Dataset, read_query
from .workspace import Workspace, write_text_atomic

COLUMNS = ("round", "row", "mask_id", "image", "answer", "answer_index", "unit", "annotator", "seconds",
           "time", "time_iso", "current")


def answer_rows(ws: Workspace, *, r: int | None = None, current_only: bool = False) -> list[dict[str, Any]]:
    """The rows of the answer logs of round ``r`` (default: every round), in round and log order.

    ``row`` is the position in the round's log; ``current`` is 1 for the answer that
    counts (the latest for its mask), 0 for one a later answer replaced. Reading a
    log verifies its checksum, so a damaged log is an error, never a partial backup.
    """
    rounds = [k for k in ws.rounds_present() if ws.path("query", k).exists()]
    if r is not None:
        if not ws.path("query", r).exists():
            raise A2LCError(f"round {r} has no answers ({ws.path('query', r)} does not exist)")
        rounds = [r]
    rows: list[dict[str, Any]] = []
    with Dataset(ws.dataset_path) as ds:
        for k in rounds:
            a = read_query(ws.path("query", k)).answers
            if len(a) and (a.mask.min() < 0 or a.mask.max() >= ds.n_masks):
                raise A2LCError(f"{ws.path('query', k)}: refers to mask ids outside 0..{ds.n_masks - 1}")
            images = ds.mask_image[a.mask] if len(a) else np.zeros(0, np.int64)
            last = {int(m): j for j, m in enumerate(a.mask.tolist())}  # the latest row of each mask
            for j in range(len(a)):
                m, lab = int(a.mask[j]), int(a.label[j])
                if lab != 255 and lab >= ds.num_classes:
                    raise A2LCError(f"{ws.path('query', k)}: answer {lab} of mask {m} is not a class")
                current = int(last[m] == j)
                if current_only and not current:
                    continue
                t = float(a.time[j])
                rows.append({
                    "round": k, "row": j, "mask_id": m, "image": ds.names[int(images[j])],
                    "answer": ds.classes.name(lab), "answer_index": lab, "unit": UNITS[int(a.unit[j])],
                    "annotator": str(a.annotator[j]),
                    # float32 in the log: its shortest text (5.664), not the float64 widening (5.664000034332275)
                    "seconds": "" if not np.isfinite(a.seconds[j]) else
                    np.format_float_positional(np.float32(a.seconds[j]), unique=True, trim="-"),
                    "time": repr(t),
                    "time_iso": _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")
                    if np.isfinite(t) else "",
                    "current": current,
                })
    return rows


def answers_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV text with the header :data:`COLUMNS`."""
    buf = io.StringIO()
    write_rows(buf, COLUMNS, rows)
    return buf.getvalue()


def export_answers(ws: Workspace, out: Path | None, *, r: int | None = None, current_only: bool = False) -> dict[str, Any]:
    """Write the answers CSV to ``out`` atomically (fsynced); returns a summary with the CSV text when ``out`` is None."""
    rows = answer_rows(ws, r=r, current_only=current_only)
    text = answers_csv(rows)
    per_round: dict[int, int] = {}
    for row in rows:
        per_round[row["round"]] = per_round.get(row["round"], 0) + 1
    summary: dict[str, Any] = {"rows": len(rows), "per_round": {str(k): v for k, v in sorted(per_round.items())},
                               "out": None if out is None else str(out)}
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise A2LCError(f"--out {out} is a folder; give a file name, e.g. {out / 'answers.csv'}")
        try:
            write_text_atomic(out, text)
        except OSError as e:
            raise A2LCError(f"cannot write {out}: {e.strerror or e}") from None
    else:
        summary["csv"] = text
    return summary
