"""Whole rounds: run the missing or stale stages of a round in order, then evaluate.

A stage is *done* when its artifact exists and records, as its inputs, the
current uids of what it was computed from; *stale* when it exists but an input
changed since; *missing* otherwise. ``run_round`` runs every stage that is not
done (all of them with ``force``), in the order of ``stages.stages_of_round``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import ui
from .config import Config, resolve_method
from .errors import A2LCError
from .stages import ACQUIRE, LCM_CORRECT, LCM_TRAIN, PSEUDOLABEL, QUERY, TRAIN, Stage, artifact_path, stages_of_round
from .state import artifact_attrs, artifact_uid, open_artifact
from .workspace import Workspace

DONE, STALE, MISSING, WAITING = "done", "stale", "missing", "waiting"


def _h5_inputs(path) -> dict[str, Any]:
    with open_artifact(path, path.stem.split(".")[0]) as f:
        return artifact_attrs(f).get("inputs", {})


def recorded_inputs(ws: Workspace, r: int, stage: Stage) -> dict[str, Any] | None:
    """What the stage's artifact says it was computed from (None if it records nothing)."""
    p = artifact_path(ws, r, stage)
    if stage in (ACQUIRE, QUERY, LCM_CORRECT):
        return _h5_inputs(p)
    if stage is LCM_TRAIN:
        from .lcm import load_lcm

        return load_lcm(p)[1].get("inputs")  # a damaged file is an A2LCError: the stage is stale
    if stage is TRAIN:
        return model_inputs(p)
    return None


def model_inputs(path) -> dict[str, Any] | None:
    """The inputs recorded inside ``model.pt`` (written in the same atomic step as the weights).

    Memory-mapped, so even a ResNet-101 checkpoint costs no read of its tensors.
    Falls back to the round's ``train.json`` for model files without the field.
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - torch.load raises assorted types on damaged files
        raise A2LCError(f"{path}: not a readable model checkpoint") from None
    if isinstance(obj, dict) and obj.get("inputs"):
        return obj["inputs"]
    try:
        return json.loads(path.with_name("train.json").read_text()).get("inputs")
    except (OSError, ValueError, AttributeError):
        return None


def expected_inputs(ws: Workspace, r: int, stage: Stage, recorded: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The inputs the stage would record if it ran now (``recorded``: what its artifact recorded, see
    :func:`a2lc_cli.state.artifact_uid` for checkpoints identified the older way)."""
    from .acquire import acquire_inputs

    rec = recorded or {}
    uid = lambda name: artifact_uid(ws.artifact(r, name))  # noqa: E731
    if stage is ACQUIRE:
        return acquire_inputs(ws, r, rec)
    if stage is QUERY:
        return {"acquire": uid("acquire.h5")}
    if stage is LCM_TRAIN:
        return {"query": uid("query.h5"), "acquire": uid("acquire.h5")}
    if stage is LCM_CORRECT:
        return {"query": uid("query.h5"), "acquire": uid("acquire.h5"), "lcm_model": artifact_uid(ws.artifact(r, "lcm.pt"), recorded=rec.get("lcm_model"))}
    if stage is TRAIN:
        return None  # compared key by key in stage_state
    return None


def stage_state(ws: Workspace, cfg: Config, r: int, stage: Stage) -> str:
    """done / stale / missing (and ``waiting`` for a query whose people's answers are incomplete)."""
    p = artifact_path(ws, r, stage)
    if not p.exists():
        return MISSING
    if stage is PSEUDOLABEL:
        return DONE
    try:
        rec = recorded_inputs(ws, r, stage)
    except A2LCError:
        return STALE
    except (OSError, RuntimeError, EOFError, KeyError, ValueError):
        return STALE
    if stage is TRAIN:
        if not rec:
            return DONE  # a model without a log: trust it
        want = {"dataset": artifact_uid(ws.dataset_path), "query": artifact_uid(ws.artifact(r, "query.h5")),
                "lcm": artifact_uid(ws.artifact(r, "lcm.h5"))}
        return DONE if all(rec.get(k) == v for k, v in want.items() if v is not None or k in rec) else STALE
    want = expected_inputs(ws, r, stage, rec)
    if stage is QUERY:
        if rec.get("acquire") != want["acquire"]:
            return STALE
        from .state import read_query

        q = read_query(p)
        return DONE if len(set(q.answers.mask.tolist())) >= len(q.selected) else WAITING
    return DONE if rec == want else STALE


def round_order_hint(ws: Workspace, r: int) -> str:
    """The error for a round run before the one it builds on: ``round r needs round r-1 first: ...``.

    Names the earliest round without a trained model, so the command it suggests works.
    """
    first = next((k for k in range(0, r) if not ws.artifact(k, "model.pt").exists()), r - 1)
    return f"round {r} needs round {r - 1} first: run `a2lc round --r {first}`" + (
        f" (then each round up to {r - 1})" if first < r - 1 else "")


_NEEDS = {ACQUIRE.name: (), QUERY.name: (ACQUIRE,), LCM_TRAIN.name: (ACQUIRE, QUERY),
          LCM_CORRECT.name: (ACQUIRE, QUERY, LCM_TRAIN), TRAIN.name: (ACQUIRE, QUERY)}


def check_order(ws: Workspace, cfg: Config, r: int, stage: Stage) -> None:
    """Refuse to run ``stage`` of round ``r`` before what it needs, with a hint that works.

    Needs: the dataset; for rounds ≥ 1 the model of round r-1 (the same words as
    ``a2lc round``: "round r needs round r-1 first"), then the earlier stages of round r
    (``train`` needs ``acquire`` and ``query``, not the LCM stages); and for every stage after
    ``acquire`` an acquisition that is not stale (:func:`answers_block`'s message when people's
    answers sit on the stale one; ``query`` itself names ``a2lc acquire`` otherwise).
    """
    from .stages import pseudolabel_command

    if not ws.dataset_path.exists():
        raise A2LCError(f"{ws.root} has no dataset yet ({ws.dataset_path}); run `{pseudolabel_command(cfg)}` first")
    if r == 0:
        return
    missing = [s for s in _NEEDS[stage.name] if not artifact_path(ws, r, s).exists()]
    if (stage is ACQUIRE or (missing and missing[0] is ACQUIRE)) and not ws.artifact(r - 1, "model.pt").exists():
        raise A2LCError(round_order_hint(ws, r))
    blocked = None if stage is ACQUIRE else answers_block(ws, cfg, r)
    if blocked:  # never build on a stale acquisition; the same way out as acquire's own refusal and status
        raise A2LCError(blocked)
    if missing:
        raise A2LCError(f"round {r} has no {missing[0].artifact} yet; run `{missing[0].command.format(r=r)}` first")
    if stage not in (ACQUIRE, QUERY) and stage_state(ws, cfg, r, ACQUIRE) == STALE:
        raise A2LCError(f"round {r}'s acquisition is stale (the model of round {r - 1} or an earlier round changed "
                        f"since {ws.artifact(r, 'acquire.h5')} was computed); rerun the round: `a2lc round --r {r}`")


def answers_block(ws: Workspace, cfg: Config, r: int) -> str | None:
    """Why round ``r`` cannot be redone as it stands, or None.

    That is when its acquisition must be recomputed (missing or stale: θ_{r-1} or an
    earlier round changed) while ``query.h5`` holds people's answers: a new selection
    would need a new ``query.h5``, and people's answers are never overwritten.
    """
    qpath = ws.artifact(r, "query.h5")
    if r < 1 or not qpath.exists() or stage_state(ws, cfg, r, ACQUIRE) == DONE:
        return None
    people = people_answers(ws, r)
    if not people:
        return None
    # a name of its own per acquisition, so that a second move never overwrites the first one's answers
    aside = qpath.with_name(f"query.h5.old-{(artifact_uid(ws.artifact(r, 'acquire.h5')) or 'acquire')[:8]}")
    return (f"round {r}'s acquisition must be recomputed (the model of round {r - 1} or an earlier round changed), "
            f"but {qpath} holds {ui.plural(people, 'answer')} of people for the old selection, which a2lc never overwrites. "
            f"Keep a copy: `a2lc export-answers --r {r} --out FILE`; move it aside: `mv {_sh(qpath)} {_sh(aside)}`; "
            f"then recompute the acquisition: `a2lc acquire --r {r}`, and let people answer the new selection: "
            f"`a2lc query --r {r} --serve` (or `--export DIR`)")


def _sh(path) -> str:
    """``path`` quoted for a shell command line in a hint (only when it needs quoting)."""
    import shlex

    return shlex.quote(str(path))


def people_answers(ws: Workspace, r: int) -> int:
    """Rows of round ``r``'s answer log given by people (not the simulated annotator); 0 without a readable log."""
    from .annotator import SIMULATED
    from .state import read_query

    qpath = ws.artifact(r, "query.h5")
    if not qpath.exists():
        return 0
    try:
        return sum(1 for a in read_query(qpath).answers.annotator if a != SIMULATED)
    except A2LCError:
        return 0


def run_round(
    ws: Workspace,
    cfg: Config,
    r: int,
    *,
    force: bool = False,
    device: str | None = None,
    evaluate: bool = True,
    on_stage: Callable[[int, str, str], None] | None = None,
) -> dict[str, Any]:
    """Run the stages of round ``r`` that are not done, in order; then evaluate the round.

    Returns a summary with each stage's outcome (``ran`` / ``skipped``) and the metrics.
    """
    from .acquire import run_acquire
    from .evaluate import run_metric
    from .lcm import run_lcm_correct, run_lcm_train
    from .pseudolabel import run_pseudolabel
    from .query import run_query
    from .training import train_round

    if r > 0 and not ws.artifact(r - 1, "model.pt").exists():
        raise A2LCError(round_order_hint(ws, r))
    blocked = answers_block(ws, cfg, r)
    if blocked:
        raise A2LCError(blocked)
    method = resolve_method(cfg.method)
    outcome: dict[str, str] = {}
    runners: dict[str, Callable[[], Any]] = {
        PSEUDOLABEL.name: lambda: run_pseudolabel(ws.dataset_path, cfg),
        ACQUIRE.name: lambda: run_acquire(ws, cfg, r, device=device),
        QUERY.name: lambda: run_query(ws, cfg, r, force=force and stage_state(ws, cfg, r, QUERY) != WAITING),
        LCM_TRAIN.name: lambda: run_lcm_train(ws, cfg, r),
        LCM_CORRECT.name: lambda: run_lcm_correct(ws, cfg, r),
        TRAIN.name: lambda: train_round(ws, cfg, r, device=device),
    }
    forced_downstream = False
    for stage in stages_of_round(r, cfg):
        state = stage_state(ws, cfg, r, stage)
        if stage is PSEUDOLABEL and state == DONE:
            outcome[stage.name] = "skipped"
            continue
        if state == DONE and not (force or forced_downstream):
            outcome[stage.name] = "skipped"
            continue
        if stage is QUERY and (cfg.method.annotator or "gt") == "human" and state in (MISSING, WAITING):
            if on_stage:
                on_stage(r, stage.name, "running")
            run_query(ws, cfg, r)
            outcome[stage.name] = "waiting"
            raise A2LCError(
                f"round {r} waits for people's answers: answer in the browser with `a2lc query --r {r} --serve`, or "
                f"`a2lc query --r {r} --export DIR`, fill in the answers and `a2lc query --r {r} --answers FILE`; "
                f"then rerun `a2lc round --r {r}`", exit_code=4,
            )
        if on_stage:
            on_stage(r, stage.name, "running")
        runners[stage.name]()
        outcome[stage.name] = "ran"
        forced_downstream = True  # everything after a rerun stage must be recomputed
    metrics: dict[str, Any] = {}
    if evaluate:
        metrics = evaluate_round(ws, cfg, r, lcm=bool(method["lcm"]) and r > 0)
    return {"round": r, "stages": outcome, "metrics": metrics}


def evaluate_round(ws: Workspace, cfg: Config, r: int, *, lcm: bool) -> dict[str, Any]:
    """Data mIoU, Model mIoU and (with LCM) LCM accuracy of round ``r``, where ground truth allows."""
    from .evaluate import run_metric
    from .state import Dataset

    out: dict[str, Any] = {}
    with Dataset(ws.dataset_path) as ds:
        has_gt = ds.has_gt
    if has_gt:
        out["data_miou"] = run_metric(ws, "data-miou", r)["miou"]
    try:
        out["model_miou"] = run_metric(ws, "model-miou", r)["miou"]
    except A2LCError as e:  # e.g. a validation split without ground truth
        ui.info(f"model mIoU skipped: {ui.esc(e)}")
    if lcm and ws.artifact(r, "lcm.h5").exists():  # corrections and their estimated precision need no ground truth
        acc = run_metric(ws, "lcm-accuracy", r)
        out["lcm_corrected"] = acc["corrected"]
        if has_gt:
            out["lcm_accuracy_before"] = acc["accuracy_before"]
            out["lcm_accuracy_after"] = acc["accuracy_after"]
        if acc.get("selection") == "calibrated":
            out["lcm_precision_bound"] = acc.get("precision_bound")
    return out
