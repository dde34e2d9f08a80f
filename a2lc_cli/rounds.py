"""Whole rounds: run the missing or stale stages of a round in order, then evaluate.

A stage is *done* when its artifact exists and records, as its inputs, the
current uids of what it was computed from; *stale* when it exists but an input
changed since; *missing* otherwise. ``run_round`` runs every stage that is not
done (all of them with ``force``), in the order of ``stages.stages_of_round``;
each stage's state is read when its turn comes, so a rerun stage (a new uid)
makes exactly the stages that declare it as an input stale, no others.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from . import ui
from .config import Config, resolve_method
from .errors import A2LCError
from .stage_inputs import StageInputs
from .stages import (ACQUIRE, BY_NAME, QUERY, TRAIN, Stage, artifact_path, is_current,
                     required_before, stages_of_round)
from .workspace import Workspace

DONE, STALE, MISSING, WAITING = "done", "stale", "missing", "waiting"


def stage_state(ws: Workspace, cfg: Config, r: int, stage: Stage) -> str:
    """done / stale / missing (and ``waiting`` for an artifact that waits for people, see ``Stage.waiting``).

    Derived from the declarations alone (:mod:`a2lc_cli.stages`): missing without the artifact;
    stale when it is unreadable, :func:`a2lc_cli.stages.is_current` says an input changed, or the stage's
    ``misfit`` hook says the artifact was made under settings the config no longer has (in a round that no
    later round's answers build upon, :func:`_built_upon`).
    """
    p = artifact_path(ws, r, stage)
    if not p.exists():
        return MISSING
    if not stage.inputs:
        return DONE
    from .store import read_header

    try:
        head = read_header(p, stage.kind)
    except (A2LCError, OSError, RuntimeError, EOFError, KeyError, ValueError):
        return STALE
    if not is_current(ws, stage, r, head.get("inputs")):
        return STALE
    if stage.misfit and not _built_upon(ws, r) and stage.hook(stage.misfit)(head, cfg):
        return STALE
    if stage.waiting and stage.hook(stage.waiting)(p):
        return WAITING
    return DONE


def _built_upon(ws: Workspace, r: int) -> bool:
    """Whether a later round has answers (``query.h5``): round r is then history, kept as it was made even
    when a setting a stage's ``misfit`` hook compares has changed since (that hook only marks the rounds
    not yet built upon stale, so switching e.g. ``lcm.selection`` mid-way redoes the current round only)."""
    return any(k > r and artifact_path(ws, k, QUERY).exists() for k in ws.rounds_present())


def round_order_hint(ws: Workspace, r: int) -> str:
    """The error for a round run before the one it builds on: ``round r needs round r-1 first: ...``.

    Names the earliest round without a trained model, so the command it suggests works.
    """
    first = next((k for k in range(0, r) if not artifact_path(ws, k, TRAIN).exists()), r - 1)
    then = f" (then each round up to {r - 1})" if first < r - 1 else ""
    if first >= 1 and _waits_for_people(ws, first):  # `a2lc round` would let the simulator answer people's masks
        return (f"round {r} needs round {r - 1} first: round {first} waits for people's answers: "
                f"`a2lc query --r {first} --serve` (or --export DIR, then --answers FILE), "
                f"then `a2lc round --r {first}`" + then)
    return f"round {r} needs round {r - 1} first: run `a2lc round --r {first}`" + then


def people_step(r: int) -> str:
    """The refusal of ``a2lc round --r r`` on a selection made for people that they have not finished."""
    return (f"round {r} was selected for people and waits for their answers: `a2lc query --r {r} --serve` "
            f"(or `a2lc query --r {r} --export DIR`, then `a2lc query --r {r} --answers FILE`), then "
            f"`a2lc round --r {r}`; to let the simulated annotator answer the rest instead: "
            f"`a2lc round --r {r} --simulated-answers`")


def earlier_round_block(ws: Workspace, cfg: Config, r: int) -> str | None:
    """Why round ``r`` cannot run on top of round ``r-1`` as it stands, or None: round ``r-1`` (≥ 1) has a
    stale stage (an input changed since). The way out is round ``r-1``'s: :func:`answers_block`'s when
    people's answers sit on its stale acquisition, else ``a2lc round --r r-1`` (which redoes what is stale)."""
    if r < 2 or not artifact_path(ws, r - 1, TRAIN).exists():
        return None
    stale = [s.name for s in stages_of_round(r - 1, cfg) if stage_state(ws, cfg, r - 1, s) == STALE]
    if not stale:
        return None
    return answers_block(ws, cfg, r - 1) or (
        f"round {r} needs round {r - 1} first: round {r - 1} is stale ({', '.join(stale)}: an input changed "
        f"since); rerun it: `a2lc round --r {r - 1}`")


def _waits_for_people(ws: Workspace, r: int) -> bool:
    """Whether round ``r``'s selection was made for people (``annotator: human``) and lacks answers."""
    from .query import answers_incomplete
    from .state import read_query

    q = ws.path(QUERY, r)
    if not q.exists():
        return False
    try:
        return read_query(q).attrs.get("meta", {}).get("annotator") == "human" and answers_incomplete(q)
    except A2LCError:
        return False


def check_order(ws: Workspace, cfg: Config, r: int, stage: Stage) -> None:
    """Refuse to run ``stage`` of round ``r`` before what it needs, with a hint that works.

    Needs: the dataset; for rounds ≥ 1 the model of round r-1 (the same words as
    ``a2lc round``: "round r needs round r-1 first"), then the earlier stages of round r
    (its required inputs, :func:`a2lc_cli.stages.required_before`: ``train`` needs ``acquire`` and
    ``query``, not the LCM stages); and for every stage after ``acquire`` an acquisition that is not
    stale (:func:`answers_block`'s message when people's answers sit on the stale one; ``query`` itself
    names ``a2lc acquire`` otherwise).
    """
    from .stages import pseudolabel_command

    if not ws.dataset_path.exists():
        raise A2LCError(f"{ws.root} has no dataset yet ({ws.dataset_path}); run `{pseudolabel_command(cfg)}` first")
    if r == 0:
        return
    missing = [s for s in required_before(stage, r, cfg) if not artifact_path(ws, r, s).exists()]
    first = missing[0] if missing else stage  # the stage to run first needs the earlier rounds' artifacts
    if any(i.required and i.offset < 0 and not artifact_path(ws, r + i.offset, BY_NAME[i.stage]).exists()
           for i in first.inputs):
        raise A2LCError(round_order_hint(ws, r))
    blocked = (None if stage is ACQUIRE else answers_block(ws, cfg, r)) or earlier_round_block(ws, cfg, r)
    if blocked:  # never build on a stale acquisition; the same way out as acquire's own refusal and status
        raise A2LCError(blocked)
    if missing:
        raise A2LCError(f"round {r} has no {missing[0].artifact} yet; run `{missing[0].command.format(r=r)}` first")
    if stage not in (ACQUIRE, QUERY) and stage_state(ws, cfg, r, ACQUIRE) == STALE:
        _raise_damage(ws, r)  # unreadable counts as stale for status; a command names the damage instead
        raise A2LCError(f"round {r}'s acquisition is stale (the model of round {r - 1} or an earlier round changed "
                        f"since {ws.path(ACQUIRE, r)} was computed); rerun the round: `a2lc round --r {r}`")


def missing_artifact_hint(ws: Workspace, cfg: Config, r: int, stage: Stage) -> str:
    """What to run first for round ``r``'s missing artifact of ``stage``: the refusal :func:`check_order` gives
    when what it needs is missing too (or stale), else ``round r has no <artifact> yet; run `<command>` first``."""
    from .stages import stage_command

    try:
        check_order(ws, cfg, r, stage)
    except A2LCError as e:
        return str(e)
    return f"round {r} has no {stage.artifact} yet; run `{stage_command(cfg, r, stage)}` first"


def _raise_damage(ws: Workspace, r: int) -> None:
    """Raise the one-line damage error (a2lc_cli.integrity) of the dataset or round r's ``acquire.h5`` if either
    fails its checks on open; return quietly when both are sound (the acquisition is then really stale)."""
    from .store import open_artifact

    for path, kind in ((ws.dataset_path, "dataset"), (artifact_path(ws, r, ACQUIRE), "acquire")):
        open_artifact(path, kind).close()


def answers_block(ws: Workspace, cfg: Config, r: int) -> str | None:
    """Why round ``r`` cannot be redone as it stands, or None.

    That is when its acquisition must be recomputed (missing or stale: θ_{r-1} or an
    earlier round changed) while ``query.h5`` holds people's answers: a new selection
    would need a new ``query.h5``, and people's answers are never overwritten.
    """
    qpath = artifact_path(ws, r, QUERY)
    if r < 1 or not qpath.exists() or stage_state(ws, cfg, r, ACQUIRE) == DONE:
        return None
    people = people_answers(ws, r)
    if not people:
        return None
    # a name of its own per acquisition, so that a second move never overwrites the first one's answers
    from .store import artifact_uid

    aside = qpath.with_name(f"{qpath.name}.old-{(artifact_uid(ws.path(ACQUIRE, r)) or 'acquire')[:8]}")
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

    qpath = artifact_path(ws, r, QUERY)
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
    simulated_answers: bool = False,
    on_stage: Callable[[int, str, str], None] | None = None,
    inputs: StageInputs | None = None,
) -> dict[str, Any]:
    """Run the stages of round ``r`` that are not done, in order; then evaluate the round.

    inputs: given to every stage that takes it and to the evaluation (the image source, θ, ψ:
    :class:`a2lc_cli.stage_inputs.StageInputs`; None: the real ones). Tests pass fakes here.

    Returns a summary with each stage's outcome (``ran`` / ``skipped``) and the metrics.
    Refused (A2LCError) before anything runs: a round before the one it builds on
    (:func:`round_order_hint`), a stale round under people's answers (:func:`answers_block`), a stale
    earlier round (:func:`earlier_round_block`), and a selection made for people whose answers are
    incomplete (exit code 4, :func:`people_step`) unless ``simulated_answers``: the simulated annotator
    then answers the masks people have not.
    """
    if r > 0 and not artifact_path(ws, r - 1, TRAIN).exists():
        raise A2LCError(round_order_hint(ws, r))
    blocked = answers_block(ws, cfg, r) or earlier_round_block(ws, cfg, r)
    if blocked:
        raise A2LCError(blocked)
    if r >= 1 and not simulated_answers and (cfg.method.annotator or "gt") != "human" and _waits_for_people(ws, r):
        # (with people as the config's annotator the query stage itself stops the round, exit code 4)
        raise A2LCError(people_step(r), exit_code=4)
    method = resolve_method(cfg.method)
    outcome: dict[str, str] = {}
    for stage in stages_of_round(r, cfg):
        # the state is read when the stage's turn comes: a stage rerun before it wrote its artifact under a
        # new uid, so exactly the stages that declare it as an input (directly or in turn) are stale now;
        # a stage that depends on none of the rerun ones stays done (the declarations alone decide)
        state = stage_state(ws, cfg, r, stage)
        if state == DONE and not (force and stage.redo):
            outcome[stage.name] = "skipped"
            continue
        if on_stage:
            on_stage(r, stage.name, "running")
        call_runner(stage, ws, cfg, r, device=device, force=force, state=state, inputs=inputs)
        outcome[stage.name] = "ran"
    metrics: dict[str, Any] = {}
    if evaluate:
        metrics = evaluate_round(ws, cfg, r, lcm=bool(method["lcm"]) and r > 0, inputs=inputs)
    return {"round": r, "stages": outcome, "metrics": metrics}


def call_runner(stage: Stage, ws: Workspace, cfg: Config, r: int, **options: Any) -> Any:
    """Run ``stage`` through its declared run function, passing the options it takes
    (``device``, ``force``, ``state``: the stage's state before the run; ``inputs``: the
    :class:`a2lc_cli.stage_inputs.StageInputs` it is given instead of opening them)."""
    fn = stage.runner()
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return fn(ws, cfg, r, **options)


def evaluate_round(ws: Workspace, cfg: Config, r: int, *, lcm: bool, inputs: StageInputs | None = None) -> dict[str, Any]:
    """Data mIoU, Model mIoU and (with LCM) LCM accuracy of round ``r``, where ground truth allows
    (``inputs``: θ_r's loader and the validation images for Model mIoU)."""
    from .evaluate import run_metric
    from .state import Dataset

    out: dict[str, Any] = {}
    with Dataset(ws.dataset_path) as ds:
        has_gt = ds.has_gt
    if has_gt:
        out["data_miou"] = run_metric(ws, "data-miou", r)["miou"]
    try:
        out["model_miou"] = run_metric(ws, "model-miou", r, inputs=inputs)["miou"]
    except A2LCError as e:  # e.g. a validation split without ground truth
        ui.info(f"model mIoU skipped: {ui.esc(e)}")
    if lcm and artifact_path(ws, r, BY_NAME["lcm-correct"]).exists():  # corrections and their estimated precision need no ground truth
        acc = run_metric(ws, "lcm-accuracy", r)
        out["lcm_corrected"] = acc["corrected"]
        if has_gt:
            out["lcm_accuracy_before"] = acc["accuracy_before"]
            out["lcm_accuracy_after"] = acc["accuracy_after"]
        if acc.get("selection") == "calibrated":
            out["lcm_precision_bound"] = acc.get("precision_bound")
    return out
