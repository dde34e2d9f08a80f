"""``a2lc train``: train the segmentation model θ_R on the labels after round R (also under torchrun)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .. import ui
from ..config import set_option
from ..model_variants import MODELS
from ._common import JSON, choices, chosen, round_option, stage_inputs, stage_round, workspace

ModelName = choices("ModelName", MODELS)  # the registry of variants (a2lc_cli.model_variants)


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    ctx: typer.Context,
    r: int = round_option("Round whose labels to train on (0 = pseudo-labels).", default=0),
    model: Optional[ModelName] = typer.Option(None, "--model", help="Model variant (default: the config's)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Training iterations."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Global batch (split over processes)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Base learning rate."),
    crop: Optional[int] = typer.Option(None, "--crop", min=1, help="Square crop side in pixels."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Backbone weights: a file, or 'imagenet' from the torch cache."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Save model.ckpt every N iterations."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the round's model.ckpt."),
    force: bool = typer.Option(False, "--force", help="Train again although θ_R is up to date."),
    stale_next_round: bool = typer.Option(
        False, "--stale-next-round",
        help="Train again although round R+1's selection holds people's answers (retraining makes it stale; "
             "keep them first with `a2lc export-answers --r R+1 --out FILE`)."),
    json_out: bool = JSON,
) -> None:
    """Train θ_R (DeepLabV3+ or a small CNN) on the labels after round R; save rounds/rNNN/model.pt."""
    from ..rounds import DONE, stage_state
    from ..stages import TRAIN
    from ..training import init_distributed, main_rank_lock, shutdown_distributed, train_round

    model = chosen(model)  # an Enum: a wrong --model is refused by Typer before the workspace is read
    ws = workspace(ctx)
    cfg = ws.config()
    for key, value in (("model", model), ("iterations", iterations), ("batch_size", batch_size), ("lr", lr),
                       ("crop", crop), ("pretrained", pretrained), ("checkpoint_every", checkpoint_every)):
        if value is not None:
            cfg = set_option(cfg, f"train.{key}", json.dumps(value))
    from ..model_variants import model_spec

    model_spec(cfg.train.model)  # the config's model (an edited config.json)
    ws, cfg, r = stage_round(ctx, r, TRAIN, cfg=cfg)
    model_path = ws.path(TRAIN, r)
    from ..training import resume_checkpoint

    if resume and not resume_checkpoint(ws, r).exists() and model_path.exists() \
            and stage_state(ws, cfg, r, TRAIN) == DONE:
        if json_out:
            ui.print_json({"round": r, "already_trained": True, "path": str(model_path)})
        else:
            ui.out.print(f"θ_{r} is already trained and up to date ({model_path}); nothing to resume. "
                         f"To train it again, run `a2lc train --r {r}` without --resume", soft_wrap=True)
        return
    recipe_given = any(v is not None for v in (model, iterations, batch_size, lr, crop, pretrained, checkpoint_every))
    if model_path.exists() and not resume:
        if _refuse_or_skip_a_current_model(ws, cfg, r, force=force or recipe_given,
                                           stale_next_round=stale_next_round, json_out=json_out):
            return
    dist_info = init_distributed(device)
    try:
        with main_rank_lock(ws, dist_info):
            summary = train_round(ws, cfg, r, device=device, resume=resume, inputs=stage_inputs(ctx))
    finally:
        shutdown_distributed()
    if not dist_info.is_main:
        return
    if json_out:
        ui.print_json({k: v for k, v in summary.items() if k != "log"})
        return
    rec = summary["recipe"]
    rows = [
        ["model", summary["model"]],
        ["iterations", summary["iterations"]],
        ["batch × crop", f"{rec['batch_size']} × {summary['crop'][0]}×{summary['crop'][1]}"],
        ["optimizer", f"{rec['optimizer']} lr {rec['lr']:g}"],
        ["final loss", summary["final_loss"]],
        ["seconds", summary["seconds"]],
        ["images/s", summary["images_per_second"]],
        ["device", f"{summary['device']} × {summary['world_size']}"],
        ["saved", summary["path"]],
    ]
    table = ui.table(f"θ_{r} trained", ["", ""], rows)
    table.show_header = False
    ui.out.print(table)
    from ..hints import localise

    ui.out.print(ui.esc(localise(f"next: a2lc evaluate --metric model-miou --r {r}")), soft_wrap=True)


def _refuse_or_skip_a_current_model(ws, cfg, r: int, *, force: bool, stale_next_round: bool, json_out: bool) -> bool:
    """Before training θ_r again over an existing ``model.pt``.

    Retraining gives model.pt a new uid, which makes round r+1's acquisition stale. So: when round r+1's
    ``query.h5`` holds people's answers for the current acquisition, refuse (even with ``--force``) unless
    ``--stale-next-round``, naming what becomes stale and how to keep the answers; otherwise, when θ_r is
    up to date (same inputs, finished) and not ``force``, say so and return True (nothing to train).
    """
    from ..errors import A2LCError
    from ..rounds import DONE, people_answers, stage_state
    from ..stages import ACQUIRE, QUERY, TRAIN

    current = stage_state(ws, cfg, r, TRAIN) == DONE
    if current and not force:
        if json_out:
            ui.print_json({"round": r, "up_to_date": True, "path": str(ws.path(TRAIN, r))})
        else:
            ui.out.print(ui.esc(f"round {r}'s model is up to date ({ws.path(TRAIN, r)} was trained on the current "
                                f"labels); use --force to train again"), soft_wrap=True)
        return True
    people = people_answers(ws, r + 1)
    if people and not stale_next_round and stage_state(ws, cfg, r + 1, ACQUIRE) == DONE:
        q = ws.path(QUERY, r + 1)
        raise A2LCError(
            f"round {r + 1}'s selection was made with this θ_{r} and {q} holds {ui.plural(people, 'answer')} of "
            f"people for it: training θ_{r} again makes round {r + 1}'s acquisition stale, and those answers could "
            f"then only be kept aside, not used. Keep a copy first: `a2lc export-answers --r {r + 1} --out FILE`; "
            f"to train anyway: `a2lc train --r {r} --force --stale-next-round`")
    return False
