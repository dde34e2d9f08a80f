"""``a2lc lcm-train``: train the label correction module ψ_r of round r."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .. import ui
from ..config import set_option
from ._common import JSON, round_option, stage_round


def register(app: typer.Typer) -> None:
    app.command("lcm-train")(lcm_train)


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
