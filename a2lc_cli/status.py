"""Where a workspace stands: which artifacts exist per round, saved metrics, what to run next."""

from __future__ import annotations

import json
from typing import Any

from .errors import A2LCError
from .stages import PSEUDOLABEL, next_step, stage_command, stages_of_round
from .workspace import Workspace


def saved_metric(ws: Workspace, r: int, metric: str) -> dict | None:
    """A metric saved by ``a2lc evaluate`` for round ``r`` (None if absent or unreadable)."""
    p = ws.artifact(r, f"metrics-{metric}.json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def workspace_status(ws: Workspace) -> dict[str, Any]:
    """A JSON-able summary of the workspace (used by ``a2lc status``)."""
    cfg = ws.config()
    out: dict[str, Any] = {"workspace": str(ws.root), "config": cfg.model_dump(mode="json"), "dataset": None}
    if ws.dataset_path.exists():
        from .state import Dataset

        try:
            with Dataset(ws.dataset_path) as ds:
                out["dataset"] = {"images": ds.n_images, "masks": ds.n_masks, "classes": ds.num_classes,
                                  "has_gt": ds.has_gt, "uid": ds.uid}
        except A2LCError as e:
            out["dataset"] = {"error": str(e)}
    from .rounds import STALE, WAITING, answers_block, stage_state

    rounds = []
    stale_round = None
    waiting_round = None
    present = ws.rounds_present()
    last = max([cfg.method.rounds, *present])
    nxt = next_step(ws, cfg, max_round=last)
    # the rounds that exist, round 0, and the round of the next step (not every configured round)
    listed = sorted({0, *present, *([nxt[0]] if nxt else [])})
    for r in listed:
        stages = {}
        for stage in stages_of_round(r, cfg):
            if stage is PSEUDOLABEL:
                continue
            stages[stage.name] = stage_state(ws, cfg, r, stage)
            if stages[stage.name] == STALE and stale_round is None:
                stale_round = r
            if stages[stage.name] == WAITING and waiting_round is None:
                waiting_round = r
        entry: dict[str, Any] = {"round": r, "stages": stages}
        q = ws.artifact(r, "query.h5")
        if q.exists():
            try:
                from .state import read_query

                qq = read_query(q)
                entry["selected"] = int(len(qq.selected))
                entry["answers"] = int(len(set(qq.answers.mask.tolist())))
            except A2LCError as e:
                stages["query"] = "damaged"
                entry["error"] = str(e)
        for metric, key in (("data-miou", "data_miou"), ("model-miou", "model_miou")):
            m = saved_metric(ws, r, metric)
            if m is not None:
                entry[key] = m.get("miou")
        rounds.append(entry)
    out["rounds"] = rounds
    if waiting_round is not None and (stale_round is None or waiting_round <= stale_round):
        out["next"] = (f"people's answers for round {waiting_round}: a2lc query --r {waiting_round} --serve "
                       f"(or --export DIR, then --answers FILE)")
    elif stale_round is not None and (nxt is None or nxt[0] >= stale_round):
        # never a command known to fail: a round whose redo would meet people's answers says what to do first
        out["next"] = answers_block(ws, cfg, stale_round) or f"a2lc round --r {stale_round}"
    else:
        out["next"] = stage_command(cfg, *nxt) if nxt else None
        if nxt and nxt[0] >= 1 and nxt[1].name == "acquire":
            out["next"] = answers_block(ws, cfg, nxt[0]) or out["next"]
    return out
