"""``a2lc evaluate``: Data mIoU, Model mIoU, LCM accuracy."""

from __future__ import annotations

from typing import Optional

import typer

from .. import ui
from ..evaluate import METRICS, run_metric
from ._common import JSON, choices, chosen, round_option, stage_inputs, stage_round, workspace

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
    if r is not None:  # the one round check of the stage commands: round r's labels need its query (and θ_{r-1})
        from ..stages import QUERY

        ws, _, r = stage_round(ctx, r, QUERY, cfg=ws.config())
    res = run_metric(ws, chosen(metric), r, unlabeled=chosen(unlabeled), inputs=stage_inputs(ctx))
    if json_out:
        ui.print_json(res)
        return
    render(res)


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
        if k != "per_class" and isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = list(next(iter(v.values())))
            ui.out.print(ui.table(k.replace("_", " "), ["", *cols], [[name, *(row.get(c) for c in cols)] for name, row in v.items()]))
