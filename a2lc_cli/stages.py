"""The stage registry: every stage of a round declared once.

A :class:`Stage` names its artifact, the artifacts it is computed from (its
:class:`Input` s, with the key each is recorded under), the command a user runs
and the function that runs it. Everything else is derived from these
declarations alone:

- which stages a round runs and in what order (:func:`stages_of_round`);
- what an artifact should record as its inputs now (:func:`current_inputs`) and
  whether it is current (:func:`is_current`: the uids it recorded equal those of
  its declared inputs now) — the one staleness check of a2lc;
- which stages must exist before another may run (:func:`required_before`);
- the first missing stage (:func:`next_step`) for ``a2lc status``.

Adding a stage: write its module (a run function ``fn(ws, cfg, r, **options)``
that records ``current_inputs(ws, STAGE, r)`` in its artifact), then declare it
here and add it to :data:`STAGES` at its place in the round (docs/developing.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, resolve_method
from .errors import A2LCError
from .workspace import Workspace

OMIT = "omit"  # Input.missing: leave the key out when the artifact is absent


@dataclass(frozen=True)
class Input:
    """One artifact a stage's output is computed from.

    key: the name the output records its uid under (``{k}`` is the round for ``earlier`` inputs).
    stage: the stage whose artifact it is.
    offset: its round relative to the stage's round (-1: the previous round; ignored for the dataset).
    earlier: one input per earlier round 1..r-1 instead of one.
    missing: what is recorded when the artifact is absent: ``None``, ``""`` or :data:`OMIT`.
    required: the stage cannot run before it exists (when that stage belongs to the round).
    """

    key: str
    stage: str
    offset: int = 0
    earlier: bool = False
    missing: Any = None
    required: bool = True


@dataclass(frozen=True)
class Stage:
    """A stage of a round, declared once.

    name: as users see it (``a2lc status``, ``a2lc round``); artifact: the file it writes
    (in the round folder, or at the workspace root when not ``per_round``); kind: the
    artifact's header kind; command: how a user makes it, with ``{r}``; run:
    ``"module:function"`` called as ``function(ws, cfg, r, **options)`` by ``a2lc round``;
    inputs: what its artifact is computed from; rounds: ``"first"`` (round 0 only),
    ``"later"`` (rounds ≥ 1) or ``"all"``; enabled: whether the config's method runs it;
    trust_unrecorded: an artifact that records no inputs counts as current (models written
    by other tools); waiting: ``"module:function"`` telling from the artifact's path that it
    exists but waits for people (state ``waiting``); redo: ``a2lc round --force`` reruns it;
    misfit: ``"module:function"`` ``(header, cfg) -> str | None`` saying why an artifact, current by
    its inputs, was made under settings the config no longer has (e.g. ``lcm.selection``): the
    stage is then stale too, in a round no later round's answers build upon (earlier rounds are
    history: ``a2lc status`` says which selection made them). Settings are compared only where they change what the artifact is;
    other config changes do not make artifacts stale.
    layout: ``"module:NAME"`` of the HDF5 artifact's schema (``{dataset: (dtype kinds, trailing shape,
    length group, required)}``, as :data:`a2lc_cli.store.LAYOUT`), kept beside the stage's reader and writer;
    None: ``store.LAYOUT[kind]`` (the built-in stages). ``store.open_artifact`` checks every open against it.
    The command is ``a2lc <name>`` in ``commands/<name with _ for ->.py`` (:mod:`a2lc_cli.commands`).
    """

    name: str
    artifact: str
    kind: str
    command: str
    run: str
    inputs: tuple[Input, ...] = ()
    rounds: str = "later"
    per_round: bool = True
    enabled: Callable[[Config], bool] | None = None
    trust_unrecorded: bool = False
    waiting: str | None = None
    redo: bool = True
    misfit: str | None = None
    layout: str | None = None

    def runner(self) -> Callable[..., Any]:
        """The run function (imported on first use: ``a2lc status`` loads no torch)."""
        return self.hook(self.run)

    @staticmethod
    def hook(ref: str) -> Callable[..., Any]:
        """The function ``"module:function"`` names (module relative to this package)."""
        module, fn = ref.split(":")
        return getattr(importlib.import_module(module, __package__), fn)

    def in_round(self, r: int) -> bool:
        return self.rounds == "all" or (self.rounds == "first") == (r == 0)

    def round_refusal(self, r: int, *, what: str | None = None) -> str | None:
        """Why ``--r r`` names a round this stage does not run in (the one wording of every command), or None.
        what: the subject of the sentence (default: the stage's name)."""
        if self.in_round(r):
            return None
        where = "round 0 only" if self.rounds == "first" else "rounds ≥ 1 (round 0 is the pseudo-labels and θ_0)"
        return f"{what or self.name} runs in {where}, not round {r}"

    def check_round(self, r: int, *, what: str | None = None) -> None:
        """Raise A2LCError (:meth:`round_refusal`'s sentence) when the stage does not run in round ``r``."""
        refusal = self.round_refusal(r, what=what)
        if refusal:
            raise A2LCError(refusal)


def _lcm_enabled(cfg: Config) -> bool:
    return bool(resolve_method(cfg.method)["lcm"])


PSEUDOLABEL = Stage("pseudolabel", "dataset.h5", "dataset", "a2lc pseudolabel", ".pseudolabel:run_stage",
                    rounds="first", per_round=False, redo=False)
ACQUIRE = Stage("acquire", "acquire.h5", "acquire", "a2lc acquire --r {r}", ".acquire:run_acquire", inputs=(
    Input("dataset", "pseudolabel", missing=""),
    Input("model", "train", offset=-1, missing=""),
    Input("r{k}/query.h5", "query", earlier=True, missing=OMIT, required=False),
    Input("r{k}/lcm.h5", "lcm-correct", earlier=True, missing=OMIT, required=False),
))
QUERY = Stage("query", "query.h5", "query", "a2lc query --r {r}", ".query:run_stage", inputs=(
    Input("acquire", "acquire"), Input("dataset", "pseudolabel"),
), waiting=".query:answers_incomplete")
LCM_TRAIN = Stage("lcm-train", "lcm.pt", "lcm", "a2lc lcm-train --r {r}", ".lcm_stage:run_lcm_train", inputs=(
    Input("query", "query"), Input("acquire", "acquire"),
), enabled=_lcm_enabled, misfit=".status:lcm_selection_misfit")
LCM_CORRECT = Stage("lcm-correct", "lcm.h5", "lcm", "a2lc lcm-correct --r {r}", ".lcm_stage:run_lcm_correct", inputs=(
    Input("query", "query"), Input("acquire", "acquire"), Input("lcm_model", "lcm-train"),
), enabled=_lcm_enabled, misfit=".status:lcm_selection_misfit")
TRAIN = Stage("train", "model.pt", "model", "a2lc train --r {r}", ".training:train_round", inputs=(
    Input("dataset", "pseudolabel"), Input("query", "query"), Input("lcm", "lcm-correct", required=False),
), rounds="all", trust_unrecorded=True)

STAGES: tuple[Stage, ...] = (PSEUDOLABEL, ACQUIRE, QUERY, LCM_TRAIN, LCM_CORRECT, TRAIN)  # in round order
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The declared stage called ``name`` (KeyError for an unknown name: a programming error)."""
    return BY_NAME[name]


def pseudolabel_command(cfg: Config) -> str:
    """A ``pseudolabel`` command line that works for this config (the labeler's required options named)."""
    from .labelers import default_labeler

    labeler = default_labeler(cfg)
    pl = cfg.pseudolabel
    if labeler == "simulate" or (labeler == "import" and pl.import_dir) or (
            labeler == "grounded-sam" and pl.grounded_sam.sam_checkpoint and pl.grounded_sam.gdino_checkpoint):
        return "a2lc pseudolabel"
    imp = "a2lc pseudolabel --labeler import --import-dir DIR (your pseudo-label PNGs)"
    gs = "a2lc pseudolabel --labeler grounded-sam --sam-checkpoint FILE --gdino-checkpoint FILE"
    return f"{gs} (or {imp})" if labeler == "grounded-sam" else f"{imp} (or {gs})"


def stages_of_round(r: int, cfg: Config) -> list[Stage]:
    """The stages round ``r`` runs, in order, under the config's method."""
    return [s for s in STAGES if s.in_round(r) and (s.enabled is None or s.enabled(cfg))]


def artifact_path(ws: Workspace, r: int, stage: Stage) -> Path:
    """Where ``stage``'s artifact of round ``r`` lives (the dataset file for stages outside rounds)."""
    return ws.artifact(r, stage.artifact) if stage.per_round else ws.root / stage.artifact


def stage_command(cfg: Config, r: int, stage: Stage) -> str:
    """The command that makes ``stage`` of round ``r``."""
    return pseudolabel_command(cfg) if stage is PSEUDOLABEL else stage.command.format(r=r)


def latest_round_with(ws: Workspace, stage: Stage, *, upto: int | None = None) -> int | None:
    """The latest round (≤ ``upto``) whose folder holds ``stage``'s artifact, or None."""
    rounds = [k for k in ws.rounds_present() if upto is None or k <= upto]
    return next((k for k in sorted(rounds, reverse=True) if artifact_path(ws, k, stage).exists()), None)


# --------------------------------------------------------------------------- the one staleness check
def current_inputs(ws: Workspace, stage: Stage, r: int, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inputs ``stage`` of round ``r`` records if it runs now: ``{key: uid}`` of each declared input.

    ``recorded``: what an existing artifact recorded, passed on to
    :func:`a2lc_cli.store.artifact_uid` (a checkpoint identified the older way, by size and time,
    keeps that identity while it still holds).
    """
    from .store import artifact_uid

    rec = recorded or {}
    out: dict[str, Any] = {}
    for inp in stage.inputs:
        src = BY_NAME[inp.stage]
        rounds = range(1, r) if inp.earlier else [r + inp.offset]
        for k in rounds:
            key = inp.key.format(k=k)
            path = artifact_path(ws, k, src)
            uid = artifact_uid(path, recorded=rec.get(key)) if (not src.per_round or k >= 0) else None
            if uid:
                out[key] = uid
            elif inp.missing != OMIT:
                out[key] = inp.missing
    return out


def inputs_match(recorded: dict[str, Any], want: dict[str, Any]) -> bool:
    """The recorded uids equal the wanted ones (a key absent now and never recorded is no difference)."""
    return all(recorded.get(k) == want.get(k) for k in {*recorded, *want} if want.get(k) is not None or k in recorded)


def is_current(ws: Workspace, stage: Stage, r: int, recorded: dict[str, Any] | None) -> bool:
    """Whether an artifact of ``stage`` that recorded ``recorded`` is current: the uids it recorded equal
    those of its declared inputs now (True for a stage with no inputs, or for an artifact that records
    none where the stage trusts such files)."""
    if not stage.inputs or (not recorded and stage.trust_unrecorded):
        return True
    return inputs_match(recorded or {}, current_inputs(ws, stage, r, recorded))


def required_before(stage: Stage, r: int, cfg: Config) -> list[Stage]:
    """The stages of round ``r`` that must exist before ``stage`` runs: its required inputs of the same
    round and, in turn, theirs; in round order."""
    in_round = {s.name for s in STAGES if s.in_round(r)}  # the stages that belong to round r
    need: set[str] = set()
    todo = [stage]
    while todo:
        s = todo.pop()
        for inp in s.inputs:
            if inp.required and not inp.earlier and inp.offset == 0 and inp.stage in in_round and inp.stage not in need:
                if BY_NAME[inp.stage].per_round:
                    need.add(inp.stage)
                    todo.append(BY_NAME[inp.stage])
    return [s for s in STAGES if s.name in need]


def next_step(ws: Workspace, cfg: Config, *, max_round: int | None = None) -> tuple[int, Stage] | None:
    """The first missing stage, scanning rounds 0.. ``max_round`` (config rounds by default)."""
    last = cfg.method.rounds if max_round is None else max_round
    for r in range(0, last + 1):
        for stage in stages_of_round(r, cfg):
            if not artifact_path(ws, r, stage).exists():
                return r, stage
    return None
