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
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Default: the config's lcm.epochs (100)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1,
        help="Default: the config's; sets lcm.batch_size (8) under lcm.selection=paper, "
             "lcm.calibrated_batch_size (64) under calibrated."),
    lr: Optional[float] = typer.Option(
        None, "--lr", min=0.0,
        help="Default: the config's; sets lcm.lr (1e-4) under lcm.selection=paper, lcm.calibrated_lr (1e-3) under calibrated."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", min=1,
                                            help="Train for at least this many steps (epochs raised). Default: none."),
    json_out: bool = JSON,
) -> None:
    """Train ψ_r on the answered masks: paper Eq. 1–2 (lcm.selection=paper, round r's answers), or with
    lcm.selection=calibrated (preset a2lc+) the k-fold cross-fitted ψ's of docs/lcm-calibrated.md."""
    from ..config import resolve_lcm
    from ..lcm_stage import run_lcm_train
    from ..stages import LCM_TRAIN

    ws, cfg, r = stage_round(ctx, r, LCM_TRAIN)
    calibrated = resolve_lcm(cfg)["selection"] == "calibrated"
    keys = {"epochs": "epochs", "batch_size": "calibrated_batch_size" if calibrated else "batch_size",
            "lr": "calibrated_lr" if calibrated else "lr", "min_steps": "min_steps"}
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("min_steps", min_steps)):
        if value is not None:  # through the config's one parser: a bad value is one line naming the key
            cfg = set_option(cfg, f"lcm.{keys[key]}", json.dumps(value))
    with ws.lock():
        res = run_lcm_train(ws, cfg, r)
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(train_line(res)))


def train_line(res: dict) -> str:
    """The one-line text summary of ``lcm-train`` (either selection, or a round with nothing to learn from)."""
    head = f"lcm-train r{res['round']}"
    if res.get("skipped"):
        return f"{head}: ψ not trained ({res['skipped']}); lcm-correct will correct nothing this round"
    line = (f"{head}: {res['samples']} answered masks, {res['steps']} steps, final loss {res['final_loss']:.4f}, "
            f"train accuracy {100 * res['train_accuracy']:.1f}%")
    if res.get("selection") == "calibrated":
        line += f", {res['folds']}-fold out-of-fold accuracy {100 * res['out_of_fold_accuracy']:.1f}%"
    return line + f", {res['seconds']:.1f} s"

