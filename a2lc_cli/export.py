"""``a2lc export``: the corrected label maps of a round as PNGs in the dataset's own convention,
plus the per-mask history of every change (who changed which mask to what, in which round)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import ui
from .csvio import write_rows
from .data.io import write_label_png
from .errors import A2LCError, os_error
from .round_state import mask_state
from .state import PROVENANCE, Dataset, paint_labels, read_array, read_corrections, read_query
from .workspace import Workspace


def label_path(out_dir: Path, convention: str, name: str, image_path: str = "") -> Path:
    """Where the label map of train image ``name`` goes, by the dataset's convention and layout.

    cityscapes: ``gtFine/train/<city>/<stem>_gtFine_labelTrainIds.png`` (names are
    ``<city>/<stem>``; names without a city go under ``gtFine/train/synthetic``);
    voc: ``SegmentationClass/<name>.png``; plain (folder source): the image's own path
    (``image_path``, relative to the dataset root) with ``images/`` replaced by ``labels/``
    and the extension by ``.png`` — ``labels/<name>.png`` for a flat folder,
    ``labels/train/<name>.png`` for a split one — so the files drop back into the tree;
    ``labels/train/<name>.png`` when the image path is unknown.
    """
    src = PurePosixPath(image_path)
    if convention == "plain" and len(src.parts) >= 2 and src.parts[0] == "images":
        return out_dir / "labels" / PurePosixPath(*src.parts[1:-1], f"{name.rsplit('/', 1)[-1]}.png")
    p = PurePosixPath(name)
    if convention == "cityscapes":
        city = str(p.parent) if str(p.parent) != "." else "synthetic"
        return out_dir / "gtFine" / "train" / city / f"{p.name}_gtFine_labelTrainIds.png"
    if convention == "voc":
        return out_dir / "SegmentationClass" / f"{name}.png"
    return out_dir / "labels" / "train" / f"{name}.png"


def mask_history(ws: Workspace, ds: Dataset, r: int) -> list[dict[str, Any]]:
    """One row per answer and per automatic correction in rounds 1..r (in log order), with ``changed``
    = 1 where the label differs from the one before (an answer may confirm the current label)."""
    rows: list[dict[str, Any]] = []
    label = ds.mask_label0.copy()
    state = mask_state(ws, ds, r)
    names = ds.classes
    for k, stage in state.rounds_applied:
        if stage == "query":
            a = read_query(ws.path("query", k)).answers
            for m, lab, ann, t in zip(a.mask.tolist(), a.label.tolist(), a.annotator.tolist(), a.time.tolist()):
                rows.append({"mask_id": m, "image": ds.names[ds.mask_image[m]], "label0": names.name(int(ds.mask_label0[m])),
                             "round": k, "source": "human", "previous": names.name(int(label[m])), "label": names.name(lab),
                             "confidence": "", "annotator": ann, "time": f"{t:.0f}",
                             "changed": int(lab != label[m])})
                label[m] = lab
        else:
            c = read_corrections(ws.path("lcm-correct", k))
            for m, lab, conf in zip(c.mask.tolist(), c.label.tolist(), c.confidence.tolist()):
                rows.append({"mask_id": m, "image": ds.names[ds.mask_image[m]], "label0": names.name(int(ds.mask_label0[m])),
                             "round": k, "source": "lcm", "previous": names.name(int(label[m])), "label": names.name(lab),
                             "confidence": f"{conf:.10f}", "annotator": "lcm", "time": "",
                             "changed": int(lab != label[m])})
                label[m] = lab
    return rows


def export_round(ws: Workspace, r: int, out_dir: Path) -> dict[str, Any]:
    """Write the label maps after round ``r`` and ``history.csv`` under ``out_dir``."""
    out_dir = Path(out_dir)
    target, state_dir = out_dir.resolve(), (ws.root / "rounds").resolve()
    if target == ws.root.resolve() or target == state_dir or state_dir in target.parents:
        raise A2LCError(f"refusing to export into the workspace's own state ({out_dir}); choose another folder")
    with Dataset(ws.dataset_path) as ds:
        state = mask_state(ws, ds, r)
        applied = [k for k, s in state.rounds_applied if s == "query"]
        if r > 0 and (not applied or applied[-1] != r):
            upto = applied[-1] if applied else 0
            if ws.path("query", upto + 1).exists():  # there, but stale by the registry's check (mask_state)
                raise A2LCError(f"round {upto + 1}'s query.h5 is out of date (its acquisition or the dataset changed); "
                                f"`a2lc status` says what to run; nothing to export beyond round {upto}")
            raise A2LCError(f"round {r} has no answers yet; nothing to export beyond round {upto}")
        conv = ds.classes.convention
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in read_array(ds.f, "images/path", path=ds.path)]
        for i in ui.progress(range(ds.n_images), f"export r{r}"):
            write_label_png(label_path(out_dir, conv, ds.names[i], paths[i]), paint_labels(ds, i, state), ds.classes)
        rows = mask_history(ws, ds, r)
        history = out_dir / "history.csv"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            with open(history, "w", newline="") as f:
                write_rows(f, ["mask_id", "image", "label0", "round", "source", "previous", "label",
                               "confidence", "annotator", "time", "changed"], rows)
        except OSError as e:  # a full or read-only output disk
            raise os_error(e, history) from None
        counts = np.bincount(state.source, minlength=3)
        return {"round": r, "images": ds.n_images, "out": str(out_dir), "convention": conv,
                "masks": {PROVENANCE[k]: int(counts[k]) for k in range(3)},
                "changes": sum(row["changed"] for row in rows), "history_rows": len(rows)}
