"""``a2lc lcm-train`` and ``a2lc lcm-correct``: the label correction module of round r."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .. import ui
from ..config import set_option
from ._common import JSON, round_option, stage_inputs, stage_round


def register(app: typer.Typer) -> None:
    app.command("lcm-train")(lcm_train)
    app.command("lcm-correct")(lcm_correct)


def lcm_train(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round (≥ 1)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Default: the config's (100)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default: the config's (8)."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help="Default: the config's (1e-4)."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", min=1,
                                            help="Train for at least this many steps (epochs raised). Default: none."),
    json_out: bool = JSON,
) -> None:
    """Train ψ_r on this round's answered masks (paper Eq. 1–2)."""
    from ..lcm_stage import run_lcm_train
    from ..stages import LCM_TRAIN

    ws, cfg, r = stage_round(ctx, r, LCM_TRAIN)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("min_steps", min_steps)):
        if value is not None:  # through the config's one parser: a bad value is one line naming the key
            cfg = set_option(cfg, f"lcm.{key}", json.dumps(value))
    with ws.lock():
        res = run_lcm_train(ws, cfg, r)
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(f"lcm-train r{r}: {res['samples']} answered masks, {res['steps']} steps, "
                     f"final loss {res['final_loss']:.4f}, train accuracy {100 * res['train_accuracy']:.1f}%, {res['seconds']:.1f} s")


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
