"""``a2lc evaluate``: Data mIoU, Model mIoU, LCM accuracy."""

from __future__ import annotations

from typing import Optional

import typer

from .. import ui
from ..evaluate import METRICS, run_metric
from ._common import JSON, choices, chosen, round_artifact, round_option, stage_inputs, workspace

Unlabeled = choices("Unlabeled", ("ignore", "error"))
Metric = choices("Metric", METRICS)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    ctx: typer.Context,
    metric: Metric = typer.Option("data-miou", "--metric", "-m", help="What to score."),
    r: Optional[int] = round_option("Round to evaluate (default: the latest with labels/model)."),
    unlabeled: Unlabeled = typer.Option("ignore", "--unlabeled", help="Data mIoU: unlabeled (255) label pixels."),
    json_out: bool = JSON,
) -> None:
    """Score a round: its labels (data-miou), its model (model-miou), or its automatic corrections (lcm-accuracy)."""
    ws = workspace(ctx)
    name = chosen(metric)
    if r is not None:  # read-only: round r's artifact must exist (what to run first if not); staleness is no refusal
        scored = scored_stage(name, r)
        if scored is not None:
            ws = round_artifact(ctx, r, scored, what=f"{name} scores {scored.name}, which")
    res = run_metric(ws, name, r, unlabeled=chosen(unlabeled), inputs=stage_inputs(ctx))
    stale = stale_stages(ws, res.get("round"))
    if stale:  # it scores what exists; say what changed since
        res["stale_stages"] = [f"r{k}:{name}" for k, name in stale]
    if json_out:
        ui.print_json(res)
        return
    if stale:
        ui.err.print(ui.esc(f"note: stale ({', '.join(res['stale_stages'])}: an input changed since); this scores what "
                            f"exists, `a2lc round --r {stale[0][0]}` recomputes it"))
    render(res)


def scored_stage(metric: str, r: int):
    """The declared stage whose round-``r`` artifact ``metric`` reads (None: only the dataset, round 0's labels)."""
    from ..stages import LCM_CORRECT, QUERY, TRAIN

    if metric == "model-miou":
        return TRAIN
    if metric == "lcm-accuracy":
        return LCM_CORRECT
    return QUERY if r >= 1 else None  # data-miou, answer-time: round r's answers


def stale_stages(ws, r) -> list[tuple[int, str]]:
    """(round, stage name) of every stale stage of rounds 0..r, in order (``a2lc status``'s verdict,
    :func:`a2lc_cli.rounds.stage_state`)."""
    if r is None:
        return []
    from ..rounds import STALE, stage_state
    from ..stages import stages_of_round

    cfg = ws.config()
    return [(k, s.name) for k in range(0, int(r) + 1) for s in stages_of_round(k, cfg)
            if s.per_round and stage_state(ws, cfg, k, s) == STALE]


def render(res: dict) -> None:
    """Print a metric result: per-class table when present, then its scalar fields."""
    if res.get("not_saved"):
        ui.err.print(f"note: the metric was not saved ({ui.esc(res['not_saved'])})")
    per_class = res.get("per_class")
    title = f"{res['metric']} — round {res.get('round')}"
    if isinstance(per_class, dict):
        ui.out.print(ui.table(title, ["class", "IoU %"], [[k, v] for k, v in per_class.items()]))
    else:
        ui.out.print(f"[bold]{ui.esc(title)}[/]")
    for k, v in res.items():
        if k in ("metric", "round", "per_class", "not_saved") or isinstance(v, (dict, list)):
            continue
        ui.out.print(ui.esc(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"))
    for k, v in res.items():  # nested tables, e.g. answer-time's per_annotator, lcm-accuracy's by_new_label
        if k == "by_class" and res.get("metric") == "lcm-accuracy":
            ui.out.print(calibration_table(v))
            continue
        if k != "per_class" and isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = list(next(iter(v.values())))
            ui.out.print(ui.table(k.replace("_", " "), ["", *cols], [[name, *(row.get(c) for c in cols)] for name, row in v.items()]))


def calibration_table(by_class: dict):
    """The calibrated selection's per-class table, then why each class without a threshold has none (grouped).
    A pooled class's support, estimate and bound are the pooled group's (column "of" says "pooled"), not the
    class's own. Columns: threshold, whose evidence, answers, situations of a correction and their n_eff,
    support at the threshold, estimated precision, its bound, corrections, measured accuracy (%)."""
    from rich.console import Group

    rows, why = [], {}
    for name, row in by_class.items():
        of = {"own": "class", "pooled": "pooled", "none": "—"}.get(row.get("source"), row.get("source"))
        t = row.get("threshold")
        rows.append([name, None if t is None else f"{t:.6g}", of, row.get("answers"), row.get("evidence"),
                     row.get("effective_evidence"), row.get("support"), row.get("estimated_precision"),
                     row.get("precision_bound"), row.get("corrected"), row.get("accuracy_after")])
        if row.get("why"):
            why.setdefault(row["why"], []).append(name)
    table = ui.table("thresholds by predicted class (of: whose evidence — pooled = the pooled group's numbers, "
                     "not the class's own)", ["class", "threshold", "of", "answers", "situations", "n_eff", "support",
                                              "estimate", "bound", "corrected", "acc. %"], rows)
    lines = [ui.esc(f"no threshold: {', '.join(names)}: {reason}") for reason, names in why.items()]
    return Group(table, *lines)
