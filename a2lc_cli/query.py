"""The ``query`` stage: select the top-B masks (Eq. 13) and record the annotator's answers.

``query.h5`` holds the selection (rank order) and an append-only answer log.
The simulated annotator answers at once; people answer through a bundle
(``--export``) whose file is imported later (``--answers``), as often as needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import faults, ui
from .round_state import mask_state
from .state import Acquisition, check_acquisition_fits, read_acquisition
from .acquisition import select_top
from .annotator import (
    SIMULATED,
    answer_with_ground_truth,
    correct_share,
    split_annotator,
    merge_answers,
    new_answers,
)
from .answers_io import export_bundle, import_command, parse_answers_file
from .config import BUDGET_SHARE, Config, resolve_method  # noqa: F401 - BUDGET_SHARE: the defaults, kept importable here
from .errors import A2LCError
from .stage_inputs import StageInputs, given
from .stages import ACQUIRE, QUERY, artifact_path, current_inputs, is_current
from .state import Answers, Dataset, Query, read_query, write_query
from .workspace import Workspace


def default_budget_share(cfg: Config) -> float:
    """``method.budget_share``, or the dataset's default of :data:`a2lc_cli.config.BUDGET_SHARE`."""
    if cfg.method.budget_share is not None:
        return float(cfg.method.budget_share)
    s = cfg.source
    key = s.preset if s.kind == "synthetic" else ("voc" if s.kind == "voc" else "other")
    return BUDGET_SHARE[key]


def default_budget(cfg: Config, n_masks: int) -> int:
    """Masks per round: ``method.budget``, or ``method.budget_share`` of all masks (see :func:`default_budget_share`)."""
    if cfg.method.budget is not None:
        return int(cfg.method.budget)
    return max(1, int(round(default_budget_share(cfg) * n_masks)))


def parse_budget(text: str | None) -> int | str | None:
    """``--budget`` value: a positive integer, ``all``, or None (the config's budget)."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return "all"
    try:
        b = int(text)
    except ValueError:
        raise A2LCError(f"--budget must be a positive integer or 'all' (got {text!r})") from None
    if b <= 0:
        raise A2LCError(f"--budget must be positive (got {b})")
    return b


def check_acquisition_current(ws: Workspace, r: int, acq: Acquisition) -> None:
    """Refuse an ``acquire.h5`` computed from another θ_{r-1} or other earlier rounds
    (:func:`a2lc_cli.stages.is_current`)."""
    if not is_current(ws, ACQUIRE, r, acq.attrs.get("inputs", {})):
        raise A2LCError(
            f"{artifact_path(ws, r, ACQUIRE)} is stale (the model or earlier rounds changed since it was computed); "
            f"rerun `a2lc acquire --r {r}`"
        )


def run_stage(ws: Workspace, cfg: Config, r: int, *, force: bool = False, state: str | None = None,
              inputs: StageInputs | None = None) -> dict[str, Any]:
    """The ``query`` stage as ``a2lc round`` runs it (:mod:`a2lc_cli.stages`).

    With people as the annotator a missing or unanswered query is selected (or kept) and the
    round stops with exit code 4 and the commands that let people answer. ``force`` reselects
    (not while people's answers are awaited: ``state`` ``waiting``).
    """
    if (cfg.method.annotator or "gt") == "human" and state in ("missing", "waiting"):
        run_query(ws, cfg, r, inputs=inputs)
        raise A2LCError(
            f"round {r} waits for people's answers: answer in the browser with `a2lc query --r {r} --serve`, or "
            f"`a2lc query --r {r} --export DIR`, fill in the answers and `a2lc query --r {r} --answers FILE`; "
            f"then rerun `a2lc round --r {r}`", exit_code=4,
        )
    return run_query(ws, cfg, r, force=force and state != "waiting", inputs=inputs)


def answers_incomplete(path: Path) -> bool:
    """Whether the query at ``path`` still waits for answers to some selected masks."""
    q = read_query(path)
    return len(set(q.answers.mask.tolist())) < len(q.selected)


def run_query(
    ws: Workspace,
    cfg: Config,
    r: int,
    *,
    budget: int | str | None = None,
    annotator: str | None = None,
    unit: str | None = None,
    export_dir: Path | None = None,
    answers_file: Path | None = None,
    replace: bool = False,
    force: bool = False,
    read_image=None,
    source: Any = None,
    inputs: StageInputs | None = None,
) -> dict[str, Any]:
    """Select round ``r``'s masks and obtain answers; returns a summary for printing.

    Dependencies, for tests to pass fakes (as :func:`a2lc_cli.acquire.run_acquire`'s ``model``/``source``):
    ``source``: the train images' :class:`~a2lc_cli.data.base.Source` for the bundle (default: the
    one ``inputs`` opens, :class:`a2lc_cli.stage_inputs.StageInputs`; checked against the dataset's
    fingerprint); ``read_image``: ``i -> (H,W,3) uint8`` image of train image ``i``, instead of a source.

    One pass: keep or (re)select the query (:func:`_existing_query`, :func:`_select`), then
    import people's answers (``answers_file``), or answer from ground truth (annotator ``gt``),
    then write a bundle for people (``export_dir``). A2LCError for a refused mode or input.
    """
    annotator, unit = _query_mode(cfg, r, annotator, unit)
    qpath = artifact_path(ws, r, QUERY)
    acq_path = artifact_path(ws, r, ACQUIRE)
    acq = read_acquisition(acq_path)
    check_acquisition_current(ws, r, acq)
    with Dataset(ws.dataset_path) as ds:
        check_acquisition_fits(acq, ds, acq_path)
        if export_dir is not None and read_image is None:
            from .fingerprint import TrainImages

            read_image = TrainImages.of(given(inputs).open_source(cfg) if source is None else source, ds)  # a changed dataset folder stops here, before any write
        existing = _existing_query(ws, r, qpath, annotator=annotator, budget=budget, force=force)
        if existing is None:
            query = _select(ds, cfg, acq, budget)
            meta = {"budget": int(len(query.selected)), "annotator": annotator, "unit": unit,
                    "fn": acq.attrs.get("meta", {}).get("fn")}
            inputs = current_inputs(ws, QUERY, r)  # {acquire, dataset}
        else:
            query = existing
            meta, inputs = existing.attrs.get("meta", {}), existing.attrs.get("inputs", {})
            _check_same_budget(r, query, acq, budget)
        summary: dict[str, Any] = {"round": r, "selected": int(len(query.selected)), "annotator": annotator, "unit": unit}
        save = lambda q: write_query(qpath, q, inputs=inputs, meta=meta)  # noqa: E731

        if answers_file is not None:
            query = _import_answers(query, ds, answers_file, replace=replace, save=save, new=existing is None,
                                    summary=summary)
        elif annotator == "gt":
            query = _answer_from_ground_truth(ws, cfg, r, ds, acq, query, unit=unit, save=save, new=existing is None,
                                              summary=summary)
        elif existing is None:
            save(query)

        prev = mask_state(ws, ds, r - 1)  # the labels the answers change
        ids, labels = query.answers.effective()
        if export_dir is not None:
            export_bundle(
                export_dir, ds=ds, read_image=read_image, r=r, selected=query.selected,
                current_labels=prev.label, mean_prob=acq.mean_prob,
                answered=dict(zip(ids.tolist(), labels.tolist())), progress=ui.progress, workspace=ws.root,
            )
            summary["bundle"] = str(export_dir.absolute())
            summary["import_command"] = import_command(r, export_dir, ws.root)
        summary.update({
            "answered": int(len(ids)), "answered_by": answered_by(query.answers),
            "void_answers": int((labels == 255).sum()),
            "changed": int((labels != prev.label[ids]).sum()) if len(ids) else 0,
            "remaining_unqueried": int(np.isfinite(acq.score).sum() - len(query.selected)),
        })
        return summary


def _check_same_budget(r: int, query: Query, acq: Acquisition, budget: int | str | None) -> None:
    """A ``--budget`` other than the kept selection's size needs ``--force`` (A2LCError)."""
    want = None if budget is None else (int(np.isfinite(acq.score).sum()) if budget == "all" else int(budget))
    if want is not None and want != len(query.selected):
        raise A2LCError(
            f"round {r} already selected {len(query.selected)} masks; to select {want} instead, "
            f"rerun with --force (only possible while it holds no people's answers)"
        )


def _query_mode(cfg: Config, r: int, annotator: str | None, unit: str | None) -> tuple[str, str]:
    """(annotator, unit) of this query, the config's where not given; A2LCError for a refused combination."""
    QUERY.check_round(r)
    method = resolve_method(cfg.method)
    annotator = annotator or cfg.method.annotator or "gt"
    if annotator not in ("gt", "human"):
        raise A2LCError(f"unknown annotator {annotator!r} (choose from gt, human)")
    unit = unit or str(method["unit"])
    if unit not in ("mask", "pixel"):
        raise A2LCError(f"unknown query unit {unit!r} (choose from mask, pixel)")
    if annotator == "human" and unit == "pixel":
        raise A2LCError("people answer whole masks: --unit pixel is only for the simulated annotator")
    return annotator, unit


def _existing_query(ws: Workspace, r: int, qpath: Path, *, annotator: str, budget: int | str | None,
                    force: bool) -> Query | None:
    """The round's ``query.h5`` to keep, or None to select anew.

    Dropped: a selection of an earlier acquisition (stale, :func:`a2lc_cli.stages.is_current`) and
    ``--budget B --force``, both only while it holds no people's answers (A2LCError otherwise);
    people may not answer on top of simulated answers (A2LCError).
    """
    existing = read_query(qpath) if qpath.exists() else None
    if existing is not None and not is_current(ws, QUERY, r, existing.attrs.get("inputs", {})):
        if len(existing.answers) and any(a != SIMULATED for a in existing.answers.annotator):
            raise A2LCError(
                f"{qpath} holds people's answers for an earlier acquisition; it is never overwritten. "
                f"Move it aside yourself if you really want to query round {r} again"
            )
        existing = None  # simulated answers for a stale selection: recompute
    if existing is not None and annotator == "human" and len(existing.answers) \
            and all(a == SIMULATED for a in existing.answers.annotator) and not (budget is not None and force):
        raise A2LCError(
            f"round {r} was already answered by the simulated annotator ({len(existing.answers)} answers from "
            f"ground truth, in {qpath}); people's answers would be mixed with them. To have people answer "
            f"round {r}, select again: `a2lc query --r {r} --annotator human --budget B --force` "
            f"(drops the simulated answers)"
        )
    if existing is not None and budget is not None and force:
        if any(a != SIMULATED for a in existing.answers.annotator):
            raise A2LCError(f"{qpath} holds people's answers; they are never overwritten (no --force here)")
        existing = None
    return existing


def _import_answers(query: Query, ds: Dataset, answers_file: Path, *, replace: bool, save, new: bool,
                    summary: dict[str, Any]) -> Query:
    """Merge a filled-in answers file into the log (contradictions refused unless ``replace``)."""
    rows = parse_answers_file(answers_file, ds.classes, query.selected)
    res = merge_answers(query.answers, rows, replace=replace)
    if res.conflicts and not replace:
        shown = "; ".join(
            f"mask {m}: stored {ds.classes.name(a)}, file says {ds.classes.name(b)}" for m, a, b in res.conflicts[:5]
        )
        raise A2LCError(
            f"{answers_file}: {len(res.conflicts)} answer(s) contradict stored ones ({shown}); "
            "nothing was imported. Use --replace to record the new answers (the old ones stay in the log)"
        )
    faults.checkpoint("query.import")
    if res.added or new:
        query = Query(query.selected, query.selected_score, res.answers, query.attrs)
        save(query)
    summary.update({"imported": res.added, "unchanged": res.unchanged, "replaced": len(res.conflicts) if replace else 0,
                    "file_answers": len(rows.mask)})  # 0: a file with no answer filled in (the command says so)
    return query


def _answer_from_ground_truth(ws: Workspace, cfg: Config, r: int, ds: Dataset, acq: Acquisition, query: Query, *,
                              unit: str, save, new: bool, summary: dict[str, Any]) -> Query:
    """The simulated annotator answers every selected mask not answered yet (mask- or pixel-level)."""
    todo = query.selected[~np.isin(query.selected, query.answers.mask)]
    if len(todo):
        relabel = cfg.method.pixel_relabel
        current = mask_state(ws, ds, r - 1).label if unit == "pixel" and relabel != "always" else None
        if not ds.has_gt:
            raise A2LCError("the simulated annotator (--annotator gt) needs ground truth; use --annotator human")
        if unit == "pixel":
            rep_gt, share = pixel_ground_truth(ds, todo, acq.rep_pixel, current)
            labels = answer_with_ground_truth(todo, unit=unit, rep_gt=rep_gt, share=share, current=current,
                                              relabel=relabel)
        else:
            labels = answer_with_ground_truth(todo, unit=unit, gt_label=ds.mask_column("gt_label"))
        new_rows = new_answers(todo, labels, unit=unit, annotator=SIMULATED)
        query = Query(query.selected, query.selected_score, query.answers.concat(new_rows), query.attrs)
    if len(todo) or new:
        save(query)
    summary["answered_now"] = int(len(todo))
    return query


def pixel_ground_truth(ds: Dataset, ids: np.ndarray, rep_pixel: np.ndarray,
                       current: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """What the pixel-level simulated annotator needs of the dataset, for masks ``ids`` (B,):
    (B,) uint8 ground truth at each mask's representative pixel (``rep_pixel`` (M,) flat index in the
    mask's image, from acquisition) and, given ``current`` (M,) labels, (B,) float share of each mask's
    pixels whose ground truth is its current label (:func:`a2lc_cli.annotator.correct_share`), else None.
    One read of the ground truth (and segments) per image that holds queried masks."""
    if rep_pixel is None:
        raise ValueError("pixel-level answers need the representative pixels of the acquisition")
    ids = np.asarray(ids, np.int64)
    rep_gt = np.zeros(ids.shape, np.uint8)
    share = None if current is None else np.zeros(ids.shape, np.float64)
    images = ds.mask_image[ids]
    for i in np.unique(images):
        sel = np.flatnonzero(images == i)
        gt = ds.gt(int(i)).ravel()
        rep_gt[sel] = gt[np.asarray(rep_pixel)[ids[sel]]]
        if share is not None:
            span = ds.masks_of(int(i))
            seg = ds.segment(int(i)).ravel()
            local = np.where(seg >= 0, seg - span.start, -1)
            share[sel] = correct_share(local, gt, np.asarray(current)[span])[ids[sel] - span.start]
    return rep_gt, share


def answered_by(answers: Answers) -> dict[str, int]:
    """Effective answers per annotator name (the note of ``NAME|NOTE`` dropped), most first."""
    latest: dict[int, str] = {}
    for m, a in zip(answers.mask.tolist(), answers.annotator.tolist()):
        latest[int(m)] = split_annotator(str(a))[0]
    counts: dict[str, int] = {}
    for name in latest.values():
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _select(ds: Dataset, cfg: Config, acq: Acquisition, budget: int | str | None) -> Query:
    """The top-B eligible masks (Eq. 13); a budget above what is left is an error."""
    scores = acq.score
    eligible = int(np.isfinite(scores).sum())
    if budget == "all":
        b = eligible
    else:
        b = default_budget(cfg, ds.n_masks) if budget is None else int(budget)
        if b > eligible:
            raise A2LCError(
                f"budget {b} is larger than the {eligible} masks left unqueried; "
                f"use --budget {eligible} or --budget all"
            )
    if eligible == 0:
        raise A2LCError("no masks are left to query: every mask was queried in an earlier round")
    ids = select_top(scores, b)
    return Query(selected=ids, selected_score=scores[ids].astype(np.float32), answers=Answers.empty(), attrs={})
