"""Annotators: who answers the queried masks.

- The simulated annotator (``gt``) answers from the ground truth: at mask level
  the majority ground-truth class of the mask's pixels (void pixels do not vote;
  a mostly-void mask is answered void), at pixel level the ground truth at the
  mask's representative pixel, expanded to the whole mask (the ALC baseline).
- A person answers through a bundle (crops, thumbnails, candidate classes, an
  answers file to fill in) whose answers are imported with full validation
  (``parse_answer_rows``) into the append-only answer log (``merge_answers``).

The rules only, arrays and rows in memory in, arrays out: no file is read or written
here. The files (the bundle, answers files) are :mod:`a2lc_cli.answers_io`; reading a
dataset's ground truth for the simulated annotator is the query stage's
(:func:`a2lc_cli.query.pixel_ground_truth`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data.base import VOID, ClassInfo
from .errors import A2LCError
from .textio import unsafe_char
from .state import UNITS, Answers

ANNOTATORS = ("gt", "human")
SIMULATED = "simulated-gt"


# --------------------------------------------------------------------------- simulated annotator
PIXEL_RELABEL = ("at-most-half", "always")


def correct_share(segment: np.ndarray, gt: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(k,) share of each mask's pixels whose ground truth equals the mask's current label.

    segment: (P,) local mask id in [0, k) or −1 (no mask); gt: (P,) uint8 ground truth (void
    pixels count as not carrying the label); current: (k,) current label of each mask.
    Masks with no pixel get 0.
    """
    segment = np.asarray(segment).ravel()
    gt = np.asarray(gt).ravel()
    k = len(current)
    inside = segment >= 0
    seg = segment[inside].astype(np.int64)
    hit = gt[inside] == np.asarray(current)[seg]
    area = np.bincount(seg, minlength=k)
    return np.bincount(seg, weights=hit, minlength=k) / np.maximum(area, 1)


def answer_with_ground_truth(ids: np.ndarray, *, unit: str, gt_label: np.ndarray | None = None,
                             rep_gt: np.ndarray | None = None, share: np.ndarray | None = None,
                             current: np.ndarray | None = None, relabel: str = "always") -> np.ndarray:
    """The simulated annotator's answers for masks ``ids`` (B,), as (B,) uint8 (255 = void).

    unit "mask": ``gt_label`` (M,) the majority ground-truth class of every mask, void not
        voting, mostly-void masks void (``masks/gt_label`` of the dataset); the answer is ``gt_label[ids]``.
    unit "pixel" (the ALC baseline): ``rep_gt`` (B,) the ground truth at each mask's representative
        pixel (:func:`a2lc_cli.query.pixel_ground_truth`), expanded to the whole mask. With
        ``relabel="at-most-half"`` (the authors' ALC code; config ``method.pixel_relabel``) a mask
        more than half of whose pixels already carry their ground-truth class (``share`` (B,),
        :func:`correct_share` of its ``current`` label) keeps its ``current`` label ((M,) labels of
        all masks before this round); "always" gives every mask the representative pixel's class.
        Either way the mask costs one unit of budget.

    Raises A2LCError for an unknown unit, ValueError for a missing array.
    """
    ids = np.asarray(ids, np.int64)
    if unit == "mask":
        if gt_label is None:
            raise ValueError("mask-level answers need the masks' ground-truth labels")
        return np.asarray(gt_label)[ids].astype(np.uint8)
    if unit != "pixel":
        raise A2LCError(f"unknown query unit {unit!r} (choose from {', '.join(UNITS)})")
    if rep_gt is None:
        raise ValueError("pixel-level answers need the ground truth at the representative pixels")
    if relabel not in PIXEL_RELABEL:
        raise ValueError(f"unknown pixel relabel rule {relabel!r} (choose from {', '.join(PIXEL_RELABEL)})")
    out = np.asarray(rep_gt, np.uint8).copy()
    if relabel == "at-most-half":
        if current is None or share is None:
            raise ValueError("the at-most-half rule needs the masks' current labels and correct shares")
        keep = np.asarray(share) > 0.5
        out[keep] = np.asarray(current)[ids[keep]]
    return out


def new_answers(ids: np.ndarray, labels: np.ndarray, *, unit: str, annotator: str,
                seconds: np.ndarray | None = None) -> Answers:
    """Answer-log rows for masks ``ids`` (B,) with ``labels`` (B,), stamped now."""
    n = len(ids)
    return Answers(
        mask=np.asarray(ids, np.int64),
        label=np.asarray(labels, np.uint8),
        unit=np.full(n, UNITS.index(unit), np.uint8),
        annotator=np.array([annotator] * n, dtype=object),
        seconds=np.full(n, np.nan, np.float32) if seconds is None else np.asarray(seconds, np.float32),
        time=np.full(n, time.time(), np.float64),
    )


# --------------------------------------------------------------------------- append-only log
@dataclass
class MergeResult:
    answers: Answers  # the log with the accepted new rows appended
    added: int  # rows appended (new masks, or replacements with replace=True)
    unchanged: int  # rows identical to the mask's current answer (not appended)
    conflicts: list[tuple[int, int, int]]  # (mask, current label, offered label)


def merge_answers(log: Answers, new: Answers, *, replace: bool = False) -> MergeResult:
    """Append ``new`` answers to ``log``; nothing is ever removed.

    An answer equal to the mask's current answer is a no-op (importing the same
    file twice changes nothing). An answer that differs from a mask's current
    answer is a conflict: with ``replace`` it is appended (and becomes current;
    the earlier answer stays in the log), otherwise it is reported and not stored.
    """
    cur_ids, cur_labels = log.effective()  # sorted by mask id
    pos = np.searchsorted(cur_ids, new.mask).clip(max=max(len(cur_ids) - 1, 0))
    found = (cur_ids[pos] == new.mask) if len(cur_ids) else np.zeros(len(new), bool)
    current = np.where(found, cur_labels[pos] if len(cur_ids) else 0, -1).astype(np.int64)
    same = found & (current == new.label)
    conflict = found & ~same
    keep = ~found | (conflict & replace)
    unchanged = int(same.sum())
    conflicts = list(zip(new.mask[conflict].tolist(), current[conflict].tolist(), new.label[conflict].tolist()))
    accepted = Answers(*(getattr(new, k)[keep] for k in ("mask", "label", "unit", "annotator", "seconds", "time")))
    return MergeResult(log.concat(accepted), int(keep.sum()), unchanged, conflicts)


# --------------------------------------------------------------------------- answers files
ANSWER_COLUMNS = ("rank", "mask_id", "image", "current_label", "candidates", "answer", "annotator", "seconds")


def parse_answer_rows(
    rows: list[tuple[str, Any]], classes: ClassInfo, selected: np.ndarray, *, where: str,
    default_annotator: str = "human",
) -> Answers:
    """Validate answer rows already read into memory (``(where, row dict)`` pairs, e.g. from
    :func:`a2lc_cli.answers_io.read_answer_rows`) into answer-log rows.

    Each row needs ``mask_id`` and ``answer`` (a class name, a class index, or
    ``void``); rows with an empty answer are skipped (not yet answered).
    ``annotator`` and ``seconds`` are optional. Errors (unknown mask ids, masks
    not queried in this round, unknown class names, contradictory duplicates,
    bad numbers) are collected and reported together in one line, prefixed by ``where``
    (the file's name). Raises A2LCError.
    """
    sel = set(np.asarray(selected).tolist())
    errors: list[str] = []
    seen: dict[int, tuple[int, int]] = {}
    out_mask, out_label, out_ann, out_sec = [], [], [], []
    for where, row in rows:
        if not isinstance(row, dict):
            errors.append(f"{where}: not an object")
            continue
        try:
            got = validate_answer(row, classes=classes, selected=sel, default_annotator=default_annotator)
        except A2LCError as e:
            errors.append(f"{where}: {e}")
            continue
        if got is None:
            continue
        m, lab, sec_f, ann = got
        if m in seen:
            if seen[m][0] != lab:
                errors.append(f"{where}: mask {m} answered twice differently (also {seen[m][1]})")
            continue
        seen[m] = (lab, len(out_mask))
        out_mask.append(m)
        out_label.append(lab)
        out_ann.append(ann)
        out_sec.append(sec_f)
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise A2LCError(f"{where}: {len(errors)} bad row{'s' if len(errors) > 1 else ''}: " + "; ".join(errors[:5]) + more)
    a = new_answers(np.array(out_mask, np.int64), np.array(out_label, np.uint8), unit="mask",
                    annotator=default_annotator, seconds=np.array(out_sec, np.float32))
    a.annotator = np.array(out_ann, dtype=object)
    return a


def validate_answer(
    row: dict[str, Any], *, classes: ClassInfo, selected: set[int], default_annotator: str = "human"
) -> tuple[int, int, float, str] | None:
    """Check one answer (a row of an answers file, or one answer given on the ``--serve`` page).

    ``row`` has ``mask_id`` and ``answer`` (a class name, a class index or ``void``),
    optionally ``seconds`` and ``annotator``. Returns (mask id, label, seconds (NaN
    unknown), annotator), None when the answer is empty (not answered yet), or raises
    A2LCError naming the problem: a mask id that is not an integer or not in this
    round's ``selected`` masks, an unknown class, a negative or non-numeric time.
    """
    answer = row.get("answer")
    if answer is None or str(answer).strip() == "":
        return None
    m = parse_mask_id(row.get("mask_id", ""))
    if m not in selected:
        raise A2LCError(f"mask {m} was not queried in this round")
    lab = _parse_label(str(answer), classes)
    sec_f = parse_seconds(row.get("seconds"))
    ann = str(row.get("annotator") or "").strip() or default_annotator
    bad = unsafe_char(ann)
    if bad is not None:
        raise A2LCError(f"annotator {ascii(ann)[:60]} holds U+{ord(bad):04X} (a control, formatting or invalid character)")
    return m, lab, sec_f, ann[:200]


_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def parse_seconds(value: Any) -> float:
    """One answer's time in seconds from a file or the page: a non-boolean number, or a string of ASCII
    decimal notation (``"5"``, ``"5.664"``, ``"1e2"``), 0..MAX_SECONDS; empty or missing = NaN (unknown).
    Refuses what ``float()`` would read leniently: ``"1_0"``, ``"nan"``, ``"inf"``, non-ASCII digits (A2LCError)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return float("nan")
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, str) and _SECONDS.fullmatch(value.strip()) is not None)
    try:
        sec = float(value.strip() if isinstance(value, str) else value) if ok else float("nan")
    except OverflowError:
        sec = float("nan")
    if not (0 <= sec <= MAX_SECONDS):  # NaN fails too
        raise A2LCError(f"seconds {ascii(value)[:40]} is not a non-negative number of seconds (at most {MAX_SECONDS})")
    return sec


MAX_SECONDS = 86400  # one answer's time: at most a day (a larger value is a unit or clock error)
_MASK_ID = re.compile(r"[+-]?[0-9]{1,18}")


def parse_mask_id(value: Any) -> int:
    """A mask id from an answers file or the page: an int, or a string of ASCII digits
    (optional sign and surrounding spaces). Refuses booleans, floats, ``"3_4_4"`` (which
    ``int()`` reads as 344), non-ASCII digits and more than 18 digits (A2LCError)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _MASK_ID.fullmatch(value.strip()):
        return int(value.strip())
    raise A2LCError(f"mask_id {ascii(value)[:40]} is not an integer")


NOTE_SEP = "|"  # an answer's annotator column is NAME or NAME|NOTE (e.g. "ana|mixed")
MIXED = "mixed"  # note of a void answer meaning "this mask spans several classes"


def split_annotator(text: str) -> tuple[str, str]:
    """(name, note) of an answer-log annotator entry ``NAME`` or ``NAME|NOTE``."""
    name, _, note = str(text).partition(NOTE_SEP)
    return name, note


def _parse_label(text: str, classes: ClassInfo) -> int:
    t = text.strip()
    if t.isascii() and t.isdigit():  # "²" and "٣" are digits to str.isdigit but not to int()
        v = int(t)
        if v == VOID or v < classes.num_classes:
            return v
        raise A2LCError(f"class index {v} is not a class (0..{classes.num_classes - 1}, 255 = void)")
    return classes.index(t)


# --------------------------------------------------------------------------- bundle for people
def candidate_classes(mean_prob: np.ndarray, classes: ClassInfo, k: int = 3) -> list[list[str]]:
    """The model's top-k classes of each mask, from its mean softmax (B,C)."""
    order = np.argsort(-mean_prob, axis=1, kind="stable")[:, :k]
    return [[classes.names[c] for c in row] for row in order]


# --------------------------------------------------------------------------- time per answer
def summarize_answer_times(answers: Answers) -> dict[str, Any]:
    """Seconds per answer of people, overall and per annotator name.

    Every row of the log counts (a changed answer took time too); rows of the
    simulated annotator and rows without a time (NaN) are left out. Returns
    ``{"answers", "median_s", "mean_s", "total_s", "per_annotator": {name: {...}}}``.
    """
    names = np.array([split_annotator(a)[0] for a in answers.annotator.tolist()], dtype=object)
    sec = answers.seconds.astype(np.float64)
    keep = np.isfinite(sec) & (answers.annotator != SIMULATED) if len(sec) else np.zeros(0, bool)

    def stats(s: np.ndarray) -> dict[str, Any]:
        if not len(s):
            return {"answers": 0, "median_s": None, "mean_s": None, "total_s": 0.0}
        return {"answers": int(len(s)), "median_s": round(float(np.median(s)), 3),
                "mean_s": round(float(np.mean(s)), 3), "total_s": round(float(np.sum(s)), 3)}

    out = stats(sec[keep])
    out["per_annotator"] = {str(n): stats(sec[keep & (names == n)]) for n in sorted(set(names[keep].tolist()))}
    return out


_MOVED = {"parse_answers_file": "parse_answers_file", "_read_rows": "read_answer_rows", "export_bundle": "export_bundle",
          "import_command": "import_command", "render_mask": "render_mask"}


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`a2lc_cli.answers_io` (file I/O) stay importable from here."""
    if name in _MOVED:
        from . import answers_io

        return getattr(answers_io, _MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
