"""Files of the people's side of a query: the annotation bundle written for people
(:func:`export_bundle`: crops, thumbnails, candidate classes, an answers file to fill in)
and the answers files read back (:func:`parse_answers_file`).

The rules (validating rows, the answer log's merge policy, candidate classes) are in
:mod:`a2lc_cli.annotator`, which reads and writes no files; this module does the I/O.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .annotator import ANSWER_COLUMNS, candidate_classes, parse_answer_rows
from .csvio import unescape_cell, write_rows
from .data.base import ClassInfo
from .dataset_file import Dataset
from .errors import A2LCError
from .state import Answers
from .textio import loads_json, read_text


def parse_answers_file(
    path: Path, classes: ClassInfo, selected: np.ndarray, *, default_annotator: str = "human"
) -> Answers:
    """Read a filled-in answers file (CSV or JSON) and validate every row
    (:func:`a2lc_cli.annotator.parse_answer_rows`; its errors name the file). Raises A2LCError."""
    path = Path(path)
    if not path.is_file():
        from .workspace import entry_problem

        why = "a folder" if path.is_dir() else entry_problem(path)
        if why is None:
            raise A2LCError(f"answers file {path} does not exist")
        raise A2LCError(f"answers file {path} is {why}, not a file")
    return parse_answer_rows(read_answer_rows(path), classes, selected, where=str(path),
                             default_annotator=default_annotator)


def read_answer_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, row dict) pairs from a CSV or JSON answers file (A2LCError for an unreadable or malformed file)."""
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
