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
