"""Annotators: who answers the queried masks.

- The simulated annotator (``gt``) answers from the ground truth: at mask level
  the majority ground-truth class of the mask's pixels (void pixels do not vote;
  a mostly-void mask is answered void), at pixel level the ground truth at the
  mask's representative pixel, expanded to the whole mask (the ALC baseline).
- A person answers through a bundle (``export_bundle``: crops, thumbnails,
  candidate classes, an answers file to fill in) whose answers are imported with
  full validation (``parse_answers_file``) into the append-only answer log
  (``merge_answers``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .csvio import unescape_cell, write_rows
from .data.base import VOID, ClassInfo
from .errors import A2LCError
from .textio import loads_json, read_text, unsafe_char
from .state import UNITS, Answers, Dataset

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


def answer_with_ground_truth(ds: Dataset, ids: np.ndarray, *, unit: str, rep_pixel: np.ndarray | None = None,
                             current: np.ndarray | None = None, relabel: str = "always") -> np.ndarray:
    """The simulated annotator's answers for masks ``ids`` (B,), as (B,) uint8 (255 = void).

    unit "mask": the majority ground-truth class of each mask, void not voting,
        mostly-void masks void (stored at pseudolabel time as ``masks/gt_label``).
    unit "pixel": the ground truth at each mask's representative pixel
        (``rep_pixel`` (M,) flat index within the mask's image, from acquisition).
        With ``relabel="at-most-half"`` (the authors' ALC code; config ``method.pixel_relabel``)
        a mask more than half of whose pixels already carry their ground-truth class keeps its
        ``current`` label ((M,) labels of all masks before this round); "always" gives every
        mask the representative pixel's class. Either way the mask costs one unit of budget.
    """
    ids = np.asarray(ids, np.int64)
    if not ds.has_gt:
        raise A2LCError("the simulated annotator (--annotator gt) needs ground truth; use --annotator human")
    if unit == "mask":
        return ds.mask_column("gt_label")[ids].astype(np.uint8)
    if unit != "pixel":
        raise A2LCError(f"unknown query unit {unit!r} (choose from {', '.join(UNITS)})")
    if rep_pixel is None:
        raise ValueError("pixel-level answers need the representative pixels of the acquisition")
    if relabel not in PIXEL_RELABEL:
        raise ValueError(f"unknown pixel relabel rule {relabel!r} (choose from {', '.join(PIXEL_RELABEL)})")
    if relabel == "at-most-half" and current is None:
        raise ValueError("the at-most-half rule needs the masks' current labels")
    out = np.full(ids.shape, VOID, np.uint8)
    images = ds.mask_image[ids]
    for i in np.unique(images):  # one read of the GT per image that holds queried masks
        sel = np.flatnonzero(images == i)
        gt = ds.gt(int(i)).ravel()
        out[sel] = gt[rep_pixel[ids[sel]]]
        if relabel == "at-most-half":
            span = ds.masks_of(int(i))
            seg = ds.segment(int(i)).ravel()
            local = np.where(seg >= 0, seg - span.start, -1)
            share = correct_share(local, gt, np.asarray(current)[span])
            keep = share[ids[sel] - span.start] > 0.5
            out[sel[keep]] = np.asarray(current)[ids[sel[keep]]]
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


def parse_answers_file(
    path: Path, classes: ClassInfo, selected: np.ndarray, *, default_annotator: str = "human"
) -> Answers:
    """Read a filled-in answers file (CSV or JSON) and validate every row.

    Each row needs ``mask_id`` and ``answer`` (a class name, a class index, or
    ``void``); rows with an empty answer are skipped (not yet answered).
    ``annotator`` and ``seconds`` are optional. Errors (unknown mask ids, masks
    not queried in this round, unknown class names, contradictory duplicates,
    bad numbers) are collected and reported together in one line.
    """
    path = Path(path)
    if not path.is_file():
        from .workspace import entry_problem

        why = "a folder" if path.is_dir() else entry_problem(path)
        if why is None:
            raise A2LCError(f"answers file {path} does not exist")
        raise A2LCError(f"answers file {path} is {why}, not a file")
    rows = _read_rows(path)
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
        raise A2LCError(f"{path}: {len(errors)} bad row{'s' if len(errors) > 1 else ''}: " + "; ".join(errors[:5]) + more)
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


def _read_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, row dict) pairs from a CSV or JSON answers file."""
    text = read_text(path, what="answers file")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        data = loads_json(text, where=str(path))
        items = data.get("masks") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise A2LCError(f"{path}: expected a list of answers or an object with a 'masks' list")
        return [(f"item {j + 1}", it) for j, it in enumerate(items)]
    # quoted fields may hold line breaks; strict: a quote never closed (or text after a closing quote) is
    # an error, not a field swallowing the rest of the file
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        if reader.fieldnames is None or "mask_id" not in reader.fieldnames or "answer" not in reader.fieldnames:
            raise A2LCError(f"{path}: CSV needs the columns mask_id and answer (found {reader.fieldnames})")
        twice = sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})
        if twice:
            raise A2LCError(f"{path}: line 1: column {ascii(twice[0])[:60]} appears twice in the header")
        return [(f"row {reader.line_num}", {k: unescape_cell(v) for k, v in row.items()}) for row in reader]
    except csv.Error as e:
        why = "a quoted field is never closed" if "unexpected end of data" in str(e) else str(e)
        raise A2LCError(f"{path}: not a valid CSV file (line {reader.line_num + 1}: {why})") from None


# --------------------------------------------------------------------------- bundle for people
def candidate_classes(mean_prob: np.ndarray, classes: ClassInfo, k: int = 3) -> list[list[str]]:
    """The model's top-k classes of each mask, from its mean softmax (B,C)."""
    order = np.argsort(-mean_prob, axis=1, kind="stable")[:, :k]
    return [[classes.names[c] for c in row] for row in order]


def export_bundle(
    out_dir: Path,
    *,
    ds: Dataset,
    read_image: Callable[[int], np.ndarray],
    r: int,
    selected: np.ndarray,
    current_labels: np.ndarray,
    mean_prob: np.ndarray,
    answered: dict[int, int] | None = None,
    progress: Callable[[Iterable, str], Iterable] | None = None,
    workspace: Path | None = None,
) -> Path:
    """Write a self-contained annotation bundle for the queried masks of round ``r``.

    ``workspace``: the workspace folder, named (absolute) in the README's import command so
    that the command works from any directory.

    For each mask (in rank order): ``masks/<rank>_m<id>_crop.png`` (the mask's
    neighbourhood, mask outlined, enlarged) and ``masks/<rank>_m<id>_full.png``
    (a thumbnail of the whole image with the mask outlined and boxed); the model's
    candidate classes; ``answers.csv`` and ``answers.json`` to fill in; ``index.html``
    to browse them; ``classes.txt``; ``README.txt``. Returns the bundle directory.
    """
    import cv2

    out_dir = Path(out_dir)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    classes = ds.classes
    answered = answered or {}
    cands = candidate_classes(mean_prob[selected], classes)
    images = ds.mask_image[selected]
    bbox = ds.mask_column("bbox")[selected]
    entries: list[dict[str, Any]] = [None] * len(selected)  # type: ignore[list-item]
    order = np.argsort(images, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(images[order])) + 1) if len(order) else []
    it: Iterable = groups
    if progress is not None:
        it = progress(groups, "writing bundle")
    for grp in it:
        i = int(images[grp[0]])
        img = read_image(i)
        seg = ds.segment(i)
        for j in grp.tolist():
            m = int(selected[j])
            crop, full = render_mask(img, seg == m, bbox[j], cv2)
            stem = f"{j + 1:05d}_m{m}"
            cv2.imwrite(str(out_dir / "masks" / f"{stem}_crop.png"), crop[:, :, ::-1])
            cv2.imwrite(str(out_dir / "masks" / f"{stem}_full.png"), full[:, :, ::-1])
            ans = answered.get(m)
            entries[j] = {
                "rank": j + 1, "mask_id": m, "image": ds.names[i],
                "crop": f"masks/{stem}_crop.png", "full": f"masks/{stem}_full.png",
                "current_label": classes.name(int(current_labels[m])), "candidates": cands[j],
                "answer": None if ans is None else classes.name(ans), "annotator": "", "seconds": "",
            }
    with open(out_dir / "answers.csv", "w", newline="") as f:
        write_rows(f, ANSWER_COLUMNS, ([e["rank"], e["mask_id"], e["image"], e["current_label"],
                                        " | ".join(e["candidates"]), e["answer"] or "", "", ""] for e in entries))
    (out_dir / "answers.json").write_text(json.dumps(
        {"round": r, "classes": list(classes.names) + ["void"], "masks": entries}, indent=1) + "\n")
    (out_dir / "classes.txt").write_text("\n".join(list(classes.names) + ["void"]) + "\n")
    (out_dir / "README.txt").write_text(_README.format(r=r, n=len(selected), command=import_command(r, out_dir, workspace)))
    (out_dir / "index.html").write_text(_index_html(r, entries))
    return out_dir


def import_command(r: int, bundle: Path, workspace: Path | None) -> str:
    """``a2lc -w WS query --r R --answers BUNDLE/answers.csv`` with absolute paths (quoted where needed)."""
    import shlex

    ws = f"-w {shlex.quote(str(Path(workspace).absolute()))} " if workspace is not None else ""
    return f"a2lc {ws}query --r {r} --answers {shlex.quote(str((Path(bundle) / 'answers.csv').absolute()))}"


def render_mask(img: np.ndarray, mask: np.ndarray, box: np.ndarray, cv2) -> tuple[np.ndarray, np.ndarray]:
    """(crop, thumbnail) RGB uint8 images with the mask outlined."""
    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    pad = max(8, int(0.25 * max(x1 - x0, y1 - y0)))
    cx0, cy0, cx1, cy1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    crop = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
    scale = max(1, int(256 / max(1, max(cy1 - cy0, cx1 - cx0))))
    crop = cv2.resize(crop, ((cx1 - cx0) * scale, (cy1 - cy0) * scale), interpolation=cv2.INTER_NEAREST)
    shifted = [((c - [cx0, cy0]) * scale + scale // 2).astype(np.int32) for c in contours]
    cv2.drawContours(crop, shifted, -1, (255, 0, 255), max(1, scale // 2))
    full_scale = min(1.0, 640 / max(h, w)) if max(h, w) > 640 else max(1, int(480 / max(h, w)))
    fw, fh = max(1, int(round(w * full_scale))), max(1, int(round(h * full_scale)))
    full = cv2.resize(np.ascontiguousarray(img), (fw, fh), interpolation=cv2.INTER_AREA if full_scale < 1 else cv2.INTER_NEAREST)
    cv2.drawContours(full, [(c * full_scale).astype(np.int32) for c in contours], -1, (255, 0, 255), 1)
    cv2.rectangle(full, (int(cx0 * full_scale), int(cy0 * full_scale)), (int(cx1 * full_scale), int(cy1 * full_scale)),
                  (255, 255, 0), 1)
    return crop, full


_README = """a2lc annotation bundle — round {r}, {n} masks

For each row of answers.csv (or each entry of answers.json), look at the images
masks/<rank>_m<id>_crop.png (the mask, outlined in magenta, enlarged) and
masks/<rank>_m<id>_full.png (where it is in the image), then write in the
`answer` column the class that covers most of the outlined region: a name from
classes.txt (or its index), or `void` if it is mostly nothing nameable.
`candidates` are the model's guesses, most likely first. Optional columns:
`annotator` (your name) and `seconds` (time spent). Leave `answer` empty for
masks you did not look at; they can be answered later.

Import with (from any folder):
  {command}
Importing the same file twice changes nothing; an answer that contradicts an
earlier one is reported and not stored unless you pass --replace.
index.html shows all masks on one page.
"""


def _index_html(r: int, entries: list[dict[str, Any]]) -> str:
    import html

    rows = "\n".join(
        f"<tr><td>{e['rank']}</td><td>{e['mask_id']}</td><td><img src='{e['crop']}'></td>"
        f"<td><img src='{e['full']}'></td><td>{html.escape(e['image'])}</td>"
        f"<td>{html.escape(e['current_label'])}</td><td>{html.escape(', '.join(e['candidates']))}</td></tr>"
        for e in entries
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>a2lc round %d</title>"
        "<style>body{font-family:sans-serif}td{padding:4px;border-bottom:1px solid #ddd}img{max-height:200px}</style>"
        "<h1>a2lc — round %d, %d masks</h1><table><tr><th>rank</th><th>mask</th><th>crop</th><th>image</th>"
        "<th>file</th><th>current label</th><th>model's candidates</th></tr>%s</table>" % (r, r, len(entries), rows)
    )


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
