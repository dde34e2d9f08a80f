"""``a2lc round``: one whole round, its stages derived from the stage registry."""

from __future__ import annotations

from typing import Optional

import typer

from .. import ui
from ._common import JSON, require_round, round_option, stage_inputs, workspace


def register(app: typer.Typer) -> None:
    app.command("round")(round_)


def _stage_printer(r: int, stage: str, what: str) -> None:
    ui.info(f"[bold]round {r}[/] · {stage}")


def _metrics_line(res: dict) -> str:
    met = res["metrics"]
    parts = [f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
             for k, v in met.items() if v is not None]  # e.g. no LCM accuracy when nothing was corrected
    ran = [s for s, o in res["stages"].items() if o == "ran"]
    return f"round {res['round']}: ran {', '.join(ran) or 'nothing (up to date)'}" + (f"; {', '.join(parts)}" if parts else "")


def round_(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round to run (0 = pseudo-labels + θ_0)."),
    force: bool = typer.Option(False, "--force", help="Redo every stage of the round, even those up to date."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    simulated_answers: bool = typer.Option(
        False, "--simulated-answers",
        help="On a selection made for people (query --annotator human) that they have not finished: let the "
             "simulated annotator answer the rest (refused without this flag)."),
    json_out: bool = JSON,
) -> None:
    """Run the missing or stale stages of round r in order (acquire → query → lcm → train → evaluate)."""
    from ..rounds import run_round

    ws = workspace(ctx)
    r = require_round(r, "round")
    cfg = ws.ensure_config()
    with ws.lock():
        res = run_round(ws, cfg, r, force=force, device=device, simulated_answers=simulated_answers,
                        on_stage=None if json_out else _stage_printer, inputs=stage_inputs(ctx))
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(_metrics_line(res)))
