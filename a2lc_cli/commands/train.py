"""``a2lc train``: train the segmentation model θ_R on the labels after round R (also under torchrun)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .. import ui
from ..config import set_option
from ..model_variants import MODELS
from ._common import JSON, choices, chosen, round_option, stage_round, workspace

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
    if resume and not ws.artifact(r, "model.ckpt").exists() and model_path.exists() \
            and stage_state(ws, cfg, r, TRAIN) == DONE:
        if json_out:
            ui.print_json({"round": r, "already_trained": True, "path": str(model_path)})
        else:
            ui.out.print(f"θ_{r} is already trained and up to date ({model_path}); nothing to resume. "
                         f"To train it again, run `a2lc train --r {r}` without --resume", soft_wrap=True)
        return
    dist_info = init_distributed(device)
    try:
        with main_rank_lock(ws, dist_info):
            summary = train_round(ws, cfg, r, device=device, resume=resume)
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
    ui.out.print(f"next: a2lc evaluate --metric model-miou --r {r}")
