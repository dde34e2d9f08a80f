"""``a2lc lcm-correct``: relabel never-queried masks with ψ_r of round r."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .. import ui
from ..config import set_option
from ._common import JSON, round_option, stage_inputs, stage_round


def register(app: typer.Typer) -> None:
    app.command("lcm-correct")(lcm_correct)


def lcm_correct(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round (≥ 1)."),
    tau: Optional[float] = typer.Option(None, "--tau", min=0.0, max=1.0, help="Confidence threshold τ_r (default: the config's schedule)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.0, max=1.0, help="Tail share α (default 0.5)."),
    json_out: bool = JSON,
) -> None:
    """Relabel never-queried masks that ψ_r predicts confidently (paper Eq. 3–6)."""
    from ..lcm_stage import run_lcm_correct
    from ..stages import LCM_CORRECT

    ws, cfg, r = stage_round(ctx, r, LCM_CORRECT)
    if tau is not None:
        cfg = set_option(cfg, "lcm.tau", json.dumps([tau] * max(r, len(cfg.tau_schedule()))))
    if alpha is not None:
        cfg = set_option(cfg, "lcm.alpha", json.dumps(alpha))
    with ws.lock():
        res = run_lcm_correct(ws, cfg, r, inputs=stage_inputs(ctx))
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(f"lcm-correct r{r}: {res['corrected']} of {res['eligible']} unqueried masks relabelled "
                            f"(τ={res['tau']}, {res['confident']} confident; tail: {', '.join(res['tail'])}; rarest: {res['rarest']})"))
