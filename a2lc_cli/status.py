"""Where a workspace stands: which artifacts exist per round, saved metrics, what to run next."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .errors import A2LCError
from .stages import LCM_CORRECT, PSEUDOLABEL, QUERY, next_step, stage_command, stages_of_round
from .workspace import Workspace


def saved_metric(ws: Workspace, r: int, metric: str) -> dict | None:
    """A metric saved by ``a2lc evaluate`` for round ``r`` (None if absent or unreadable)."""
    p = ws.artifact(r, f"metrics-{metric}.json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def workspace_status(ws: Workspace, *, verify: bool = False) -> dict[str, Any]:
    """A JSON-able summary of the workspace (used by ``a2lc status``). ``verify``: also read every
    per-pixel map of ``dataset.h5`` through its checks (:func:`a2lc_cli.integrity.verify_pixels`)."""
    cfg = ws.config()
    out: dict[str, Any] = {"workspace": str(ws.root), "config": cfg.model_dump(mode="json"), "dataset": None}
    if ws.dataset_path.exists():
        from .state import Dataset

        try:
            with Dataset(ws.dataset_path) as ds:
                out["dataset"] = {"images": ds.n_images, "masks": ds.n_masks, "classes": ds.num_classes,
                                  "has_gt": ds.has_gt, "uid": ds.uid}
                rounds_made = bool(ws.rounds_present())
                outdated = outdated_dataset(ds.meta, cfg, rounds=rounds_made)
                if outdated:  # the pseudolabel stage is stale: the built-in benchmark it was made with is older
                    out["dataset"].update(pseudolabel="stale", outdated=outdated)
                changed = None if outdated else changed_dataset(ds.meta, cfg, rounds=rounds_made)
                if changed:  # stale too: the config now describes other train images
                    out["dataset"].update(pseudolabel="stale", changed=changed)
                if verify:
                    from . import ui
                    from .integrity import verify_pixels

                    out["dataset"]["verified_pixels"] = verify_pixels(
                        ds, lambda it: ui.progress(it, f"verifying {ui.esc(ws.dataset_path.name)}"))
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
        damage = _round_damage(ws, r, out["dataset"])
        if damage is not None:
            stage, entry["error"] = damage
            stages[stage] = "damaged"
        q = ws.path(QUERY, r)
        if q.exists():
            try:
                from .state import read_query

                qq = read_query(q)
                entry["selected"] = int(len(qq.selected))
                entry["answers"] = int(len(set(qq.answers.mask.tolist())))
            except A2LCError as e:
                stages["query"] = "damaged"
                entry.setdefault("error", str(e))
        for metric, key in (("data-miou", "data_miou"), ("model-miou", "model_miou")):
            m = saved_metric(ws, r, metric)
            if m is not None:
                entry[key] = m.get("miou")
        lcm = lcm_round(ws, r, stale=stages.get("lcm-correct") == STALE)
        if lcm is not None:
            entry["lcm"] = lcm
        rounds.append(entry)
    out["rounds"] = rounds
    out["lcm"] = lcm_summary(rounds)
    if out["lcm"] is not None:
        from .config import resolve_lcm

        out["lcm"]["config_selection"] = resolve_lcm(cfg)["selection"]
    if waiting_round is not None and (stale_round is None or waiting_round <= stale_round):
        # answers for a stale acquisition cannot be completed (query refuses it): say how to get out first
        stale_acquisition = rounds[listed.index(waiting_round)]["stages"].get("acquire") == STALE
        out["next"] = answers_block(ws, cfg, waiting_round) or (
            f"a2lc acquire --r {waiting_round}" if stale_acquisition else  # query refuses a stale acquisition
            f"people's answers for round {waiting_round}: a2lc query --r {waiting_round} --serve "
            f"(or --export DIR, then --answers FILE)")
    elif stale_round is not None and (nxt is None or nxt[0] >= stale_round):
        # never a command known to fail: a round whose redo would meet people's answers says what to do first
        out["next"] = (answers_block(ws, cfg, stale_round)
                       or people_round_step(ws, stale_round, rounds[listed.index(stale_round)]["stages"])
                       or f"a2lc round --r {stale_round}")
    else:
        out["next"] = stage_command(cfg, *nxt) if nxt else None
        if nxt and nxt[0] >= 1 and nxt[1].name == "acquire":
            out["next"] = answers_block(ws, cfg, nxt[0]) or out["next"]
    if (out["dataset"] or {}).get("pseudolabel") == "stale":
        out["next"] = rebuild_command(bool(present))
    return out


def rebuild_command(rounds: bool) -> str:
    """The command that rebuilds ``dataset.h5`` (``--force`` where rounds were computed from it)."""
    return "a2lc pseudolabel --force" if rounds else "a2lc pseudolabel"


def outdated_dataset(meta: dict[str, Any], cfg, *, rounds: bool, where: str = "dataset.h5") -> str | None:
    """One line when ``meta`` (a dataset file's) says an older built-in benchmark made it, with the way out;
    None otherwise (another labeler, or this version). rounds: rounds were computed from it."""
    from .labelers.benchmark_version import NOISE_VERSION, outdated_benchmark

    old = outdated_benchmark(meta)
    if old is None:
        return None
    line = (f"{where} holds built-in benchmark v{old}, made by an older simulator (this a2lc makes v{NOISE_VERSION}; "
            f"docs/benchmark.md): rebuild it with `{rebuild_command(rounds)}`"
            + (" (its rounds then rerun)" if rounds else "") + " or start a new workspace")
    if cfg.method.budget_share == V1_BUDGET_SHARE:
        line += (f"; config.json keeps v1's method.budget_share {V1_BUDGET_SHARE} "
                 "(`a2lc config set method.budget_share=null` for this version's default)")
    return line


def source_changes(meta: dict[str, Any], cfg) -> list[tuple[str, Any, Any]]:
    """The settings that decide a dataset file's train images and that the config no longer has:
    ``[(key, as built, as configured now), ...]`` in config-key order, e.g. ``[("source.n_train", 20, 30)]``.

    meta: ``dataset.h5``'s meta (``a2lc pseudolabel`` records the config's ``source`` and ``seed``; a file
    without them gives ``[]``). Compared: ``source.kind``; for the built-in benchmark also its
    ``source.preset``, ``seed``, ``source.n_train``, ``source.height`` and ``source.width``, each with its
    preset default filled in (an explicit default is no change). Not compared: ``source.n_val`` (the val
    images are not in the dataset file) and a real dataset's ``root`` (a moved dataset is the same data).
    """
    built = meta.get("source")
    if not isinstance(built, dict):
        return []
    now = cfg.source.model_dump(mode="json")
    if built.get("kind") != now.get("kind"):
        return [("source.kind", built.get("kind"), now.get("kind"))]
    if now.get("kind") != "synthetic":
        return []
    from .data.synthetic import SyntheticSource

    def resolved(src: dict[str, Any], seed: Any) -> dict[str, Any]:
        """The settings as the built-in benchmark's source resolves them (its preset defaults filled in)."""
        preset = src.get("preset") or "city"
        sizes = {key: src.get(key) for key in ("n_train", "height", "width")}
        try:
            made = SyntheticSource(preset=preset, seed=0, **sizes)  # cheap: renders nothing
            sizes = {"n_train": made.counts["train"], "height": made.height, "width": made.width}
        except A2LCError:  # a preset this a2lc does not know: compare as recorded
            pass
        return {"source.preset": preset, "seed": seed, **{f"source.{k}": v for k, v in sizes.items()}}

    a, b = resolved(built, meta.get("seed", cfg.seed)), resolved(now, cfg.seed)
    return [(k, a[k], b[k]) for k in a if a[k] != b[k]]


def changed_dataset(meta: dict[str, Any], cfg, *, rounds: bool, where: str = "dataset.h5") -> str | None:
    """One line when the config no longer describes the train images ``meta`` (a dataset file's) was built
    from (:func:`source_changes`), with both ways out; None when it does. rounds: rounds were computed from it."""
    changes = source_changes(meta, cfg)
    if not changes:
        return None
    built = [f"{k}={_setting(v)}" for k, v, _ in changes]
    now = ", ".join(f"{k}={_setting(v)}" for k, _, v in changes)
    return (f"{where} was built with {', '.join(built)}; the config now says {now}: rebuild it with "
            f"`{rebuild_command(rounds)}`" + (" (its rounds then rerun)" if rounds else "")
            + f", or set the config back: `a2lc config set {' '.join(built)}`")


def _setting(value: Any) -> str:
    return "null" if value is None else str(value)


V1_BUDGET_SHARE = 0.04  # benchmark v1's default share, written explicitly into its workspaces' configs


def _round_damage(ws: Workspace, r: int, dataset: dict | None) -> tuple[str, str] | None:
    """(stage, error) of round r's first damaged artifact of any declared stage (a2lc_cli.integrity), else None."""
    from .integrity import artifact_damage, round_files

    size = dataset if dataset and "error" not in dataset else {}
    for name, kind, stage_name in round_files():
        p = ws.artifact(r, name)
        if p.exists():
            err = artifact_damage(p, kind, n_masks=size.get("masks"), num_classes=size.get("classes"))
            if err is not None:
                return stage_name, err
    return None


def people_round_step(ws: Workspace, r: int, stages: dict[str, str]) -> str | None:
    """The next step of a stale round whose selection was made for people (``query.h5`` recorded
    ``annotator: human``) and holds none of their answers yet: recompute a stale acquisition, then
    select again for people. ``a2lc round`` would let the simulated annotator answer instead (or
    fail without ground truth). None for any other round."""
    from .rounds import STALE
    from .state import read_query

    q = ws.path(QUERY, r)
    try:
        annotator = read_query(q).attrs.get("meta", {}).get("annotator") if q.exists() else None
    except A2LCError:
        return None
    if annotator != "human":
        return None
    if stages.get("acquire") == STALE:
        return f"a2lc acquire --r {r}"
    if stages.get("query") == STALE:
        return (f"people's answers for round {r} (a new selection): a2lc query --r {r} --serve "
                f"(or --export DIR, then --answers FILE)")
    return None


def lcm_selection_misfit(head: dict[str, Any], cfg) -> str | None:
    """Why ``lcm.pt`` / ``lcm.h5`` (their header) do not fit the config's LCM selection, or None when they do:
    a ψ trained (or corrections made) for ``lcm.selection=calibrated`` is stale once the config says
    ``paper``, and the other way round (the ``misfit`` hook of the LCM stages, :mod:`a2lc_cli.stages`)."""
    from .config import resolve_lcm

    made = head.get("selection") or (head.get("meta") or {}).get("selection") or "paper"
    want = resolve_lcm(cfg)["selection"]
    return None if made == want else f"made for lcm.selection={made}; the config now says {want}"


def lcm_round(ws: Workspace, r: int, *, stale: bool | None = None) -> dict[str, Any] | None:
    """Round r's automatic corrections from its ``lcm.h5``: count, selection, estimated precision and bound
    (the calibrated selection's; None under the paper's rule), ``stale`` (an input or the config's
    ``lcm.selection`` changed since: the corrections are no longer applied, :mod:`a2lc_cli.round_state`),
    ``reason`` (why ψ was not trained, when it was not) and ``thresholds`` (classes with a calibrated
    threshold; None under the paper's rule). None without a readable ``lcm.h5``.
    stale: the stage's state when the caller has it (None: computed here)."""
    p = ws.path(LCM_CORRECT, r)
    if r < 1 or not p.exists():
        return None
    from .state import read_corrections

    try:
        c = read_corrections(p)
    except (A2LCError, KeyError, OSError):
        return None
    cal = c.calibration or {}
    thresholds = int(np.isfinite(cal["log_threshold"]).sum()) if "log_threshold" in cal else None
    if stale is None:
        from .rounds import STALE, stage_state

        stale = stage_state(ws, ws.config(), r, LCM_CORRECT) == STALE
    meta = c.attrs.get("meta", {})
    return {"corrected": int(len(c.mask)), "selection": meta.get("selection", "paper"),
            "estimated_precision": meta.get("estimated_precision"), "precision_bound": meta.get("precision_bound"),
            "stale": bool(stale), "reason": meta.get("reason"), "thresholds": thresholds}


def lcm_summary(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """All rounds' corrections, and — where every correcting round has one — their estimated precision and
    lower bound, weighted by the corrections of each round. Stale rounds' corrections (no longer applied)
    are not counted: ``stale_corrected`` / ``stale_rounds`` say how many there are. ``thresholds``: whether
    any counted calibrated round had a class with a threshold; ``reasons``: why ψ was not trained, per
    round where it was not. None when no round has ``lcm.h5``."""
    every = [(e["round"], e["lcm"]) for e in rounds if e.get("lcm")]
    if not every:
        return None
    rows = [x for _, x in every if not x.get("stale")]
    stale = [(k, x) for k, x in every if x.get("stale")]
    n = sum(x["corrected"] for x in rows)
    calibrated = bool(rows) and all(x["selection"] == "calibrated" for x in rows)
    out: dict[str, Any] = {"corrected": n, "rounds": len(rows), "estimated_precision": None, "precision_bound": None,
                           "selection": "calibrated" if calibrated else (rows or [x for _, x in every])[-1]["selection"],
                           "stale_corrected": sum(x["corrected"] for _, x in stale), "stale_rounds": [k for k, _ in stale],
                           "thresholds": any((x.get("thresholds") or 0) > 0 for x in rows),
                           "reasons": {k: x["reason"] for k, x in every if x.get("reason") and not x.get("stale")},
                           "made_with": {k: x["selection"] for k, x in every if not x.get("stale")}}
    if calibrated and n:
        out["estimated_precision"] = sum(x["corrected"] * x["estimated_precision"] for x in rows if x["corrected"]) / n
        out["precision_bound"] = sum(x["corrected"] * x["precision_bound"] for x in rows if x["corrected"]) / n
    return out


def lcm_line(summary: dict[str, Any] | None) -> str | None:
    """"LCM: N corrections, estimated precision ≥ p" (the text ``a2lc status`` and the report show), with why
    nothing was corrected and the stale rounds' corrections, which are not counted."""
    if summary is None:
        return None
    n = summary["corrected"]
    head = f"LCM: {n} correction{'s' if n != 1 else ''} in {summary['rounds']} round{'s' if summary['rounds'] != 1 else ''}"
    stale_rounds = summary.get("stale_rounds") or []
    tail = ""
    if stale_rounds:
        rs = ", ".join(str(k) for k in stale_rounds)
        tail = (f"; not counted: {summary.get('stale_corrected', 0)} stale correction(s) of round(s) {rs} "
                f"(an input or lcm.selection changed: `a2lc round --r {stale_rounds[0]}` redoes them)")
    reasons = summary.get("reasons") or {}
    want = summary.get("config_selection")
    other = [k for k, sel in (summary.get("made_with") or {}).items() if want and sel != want]
    if other:  # rounds built upon by later ones stay as made (a2lc_cli.rounds._built_upon)
        made = summary["made_with"][other[0]]
        tail += (f"; round{'s' if len(other) > 1 else ''} {', '.join(map(str, other))} made with lcm.selection={made}, "
                 f"the config now says {want}")
    if summary.get("precision_bound") is not None:
        return (f"{head}, estimated precision ≥ {summary['precision_bound']:.2f} "
                f"(estimate {summary['estimated_precision']:.2f})" + tail)
    if n == 0 and reasons and len(reasons) == summary["rounds"]:
        ks = ", ".join(str(k) for k in reasons)
        return f"{head} (ψ not trained in round{'s' if len(reasons) > 1 else ''} {ks}: {list(reasons.values())[-1]})" + tail
    if summary["selection"] == "calibrated":
        if n or not summary["rounds"]:
            return head + tail
        if not summary.get("thresholds"):
            return f"{head} (calibrated selection: no class had a threshold — no class's precision bound reached lcm.target_precision)" + tail
        return f"{head} (calibrated selection: no never-queried mask reached its class's threshold)" + tail
    if not summary["rounds"]:
        return head + tail
    return f"{head} (paper's rule: no precision estimate; `lcm.selection=calibrated` gives one)" + tail
