"""The stages of a round, their artifacts and the command that makes each (one table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config, resolve_method
from .workspace import Workspace


@dataclass(frozen=True)
class Stage:
    name: str
    artifact: str  # file name inside the round directory ("" for the dataset file)
    command: str  # how a user makes it, with {r}


PSEUDOLABEL = Stage("pseudolabel", "", "a2lc pseudolabel")
ACQUIRE = Stage("acquire", "acquire.h5", "a2lc acquire --r {r}")
QUERY = Stage("query", "query.h5", "a2lc query --r {r}")
LCM_TRAIN = Stage("lcm-train", "lcm.pt", "a2lc lcm-train --r {r}")
LCM_CORRECT = Stage("lcm-correct", "lcm.h5", "a2lc lcm-correct --r {r}")
TRAIN = Stage("train", "model.pt", "a2lc train --r {r}")


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
    if r == 0:
        return [PSEUDOLABEL, TRAIN]
    out = [ACQUIRE, QUERY]
    if resolve_method(cfg.method)["lcm"]:
        out += [LCM_TRAIN, LCM_CORRECT]
    return out + [TRAIN]


def artifact_path(ws: Workspace, r: int, stage: Stage) -> Path:
    return ws.dataset_path if stage is PSEUDOLABEL else ws.artifact(r, stage.artifact)


def stage_command(cfg: Config, r: int, stage: Stage) -> str:
    """The command that makes ``stage`` of round ``r``."""
    return pseudolabel_command(cfg) if stage is PSEUDOLABEL else stage.command.format(r=r)


def next_step(ws: Workspace, cfg: Config, *, max_round: int | None = None) -> tuple[int, Stage] | None:
    """The first missing stage, scanning rounds 0.. ``max_round`` (config rounds by default)."""
    last = cfg.method.rounds if max_round is None else max_round
    for r in range(0, last + 1):
        for stage in stages_of_round(r, cfg):
            if not artifact_path(ws, r, stage).exists():
                return r, stage
    return None
