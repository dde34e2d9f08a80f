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
    tau: Optional[float] = typer.Option(
        None, "--tau", min=0.0, max=1.0,
        help="lcm.selection=paper only: confidence threshold τ_r (default: the config's schedule lcm.tau). "
             "Refused under calibrated (thresholds come from lcm.target_precision)."),
    alpha: Optional[float] = typer.Option(
        None, "--alpha", min=0.0, max=1.0,
        help="lcm.selection=paper only: tail share α (default lcm.alpha, 0.5). Refused under calibrated (no tail rule)."),
    json_out: bool = JSON,
) -> None:
    """Relabel never-queried masks: those ψ_r predicts confidently (paper Eq. 3–6, lcm.selection=paper), or
    with lcm.selection=calibrated those reaching their class's calibrated threshold (docs/lcm-calibrated.md)."""
    from ..config import resolve_lcm
    from ..errors import A2LCError
    from ..lcm_stage import run_lcm_correct
    from ..stages import LCM_CORRECT

    ws, cfg, r = stage_round(ctx, r, LCM_CORRECT)
    if resolve_lcm(cfg)["selection"] == "calibrated":
        given_opts = [name for name, v in (("--tau", tau), ("--alpha", alpha)) if v is not None]
        if given_opts:
            raise A2LCError(f"{' and '.join(given_opts)} appl{'y' if len(given_opts) > 1 else 'ies'} to lcm.selection=paper only; the calibrated selection's "
                            "thresholds come from lcm.target_precision (e.g. `a2lc config set lcm.target_precision=0.95`)")
    if tau is not None:
        cfg = set_option(cfg, "lcm.tau", json.dumps([tau] * max(r, len(cfg.tau_schedule()))))
    if alpha is not None:
        cfg = set_option(cfg, "lcm.alpha", json.dumps(alpha))
    with ws.lock():
        res = run_lcm_correct(ws, cfg, r, inputs=stage_inputs(ctx))
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(correct_line(res)))


def correct_line(res: dict) -> str:
    """The one-line text summary of ``lcm-correct`` under either selection."""
    head = f"lcm-correct r{res['round']}: {res['corrected']} of {res['eligible']} unqueried masks relabelled"
    if res.get("reason"):
        return f"{head} ({res['reason']})"
    if res.get("selection") == "calibrated":
        if res["corrected"]:
            return (f"{head} (calibrated: estimated precision {res['estimated_precision']:.3f}, "
                    f"≥ {res['precision_bound']:.3f} at 95%; target {res['target_precision']})")
        with_t = res.get("classes_with_threshold") or []
        return head + (f" (calibrated: thresholds for {', '.join(with_t)}; no never-queried mask reached one)" if with_t
                       else f" (calibrated: no class reached lcm.target_precision = {res['target_precision']}; "
                            "see `a2lc evaluate --metric lcm-accuracy`)")
    return (f"{head} (τ={res['tau']}, {res['confident']} confident; tail: {', '.join(res['tail'])}; "
            f"rarest: {res['rarest']})")
