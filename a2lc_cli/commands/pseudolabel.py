"""``a2lc pseudolabel``: build the correction units and round-0 labels (dataset.h5)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ..config import Config, GroundedSamConfig, parse_config, set_option
from ..errors import A2LCError
from ..labelers import LABELERS
from ..pseudolabel import dist_env, run_pseudolabel
from ._common import JSON, choices, chosen, stage_inputs, workspace

LabelerName = choices("LabelerName", LABELERS)
Precision = choices("Precision", GroundedSamConfig.model_fields["precision"].annotation)

_GS = "Grounded SAM"


def register(app: typer.Typer) -> None:
    app.command("pseudolabel")(pseudolabel)


def pseudolabel(
    ctx: typer.Context,
    labeler: Optional[LabelerName] = typer.Option(None, "--labeler", help="Who makes the pseudo-labels (default: by source)."),
    import_dir: Optional[Path] = typer.Option(None, "--import-dir", help="import: folder of pseudo-label PNGs (<stem>.png)."),
    mask_dir: Optional[Path] = typer.Option(None, "--mask-dir", help="import: folder of mask-id PNGs (<stem>.png, 16-bit)."),
    sam_checkpoint: Optional[Path] = typer.Option(None, "--sam-checkpoint", help="SAM weights, e.g. sam_vit_h_4b8939.pth.", rich_help_panel=_GS),
    sam_type: Optional[str] = typer.Option(None, "--sam-type", help="vit_h | vit_l | vit_b (or a JSON architecture spec).", rich_help_panel=_GS),
    gdino_checkpoint: Optional[Path] = typer.Option(None, "--gdino-checkpoint", help="GroundingDINO weights, e.g. groundingdino_swint_ogc.pth.", rich_help_panel=_GS),
    gdino_config: Optional[str] = typer.Option(None, "--gdino-config", help="SwinT | SwinB (bundled configs) or a config .py path.", rich_help_panel=_GS),
    text_encoder: Optional[Path] = typer.Option(None, "--text-encoder", help="Local bert-base-uncased folder (config.json, vocab.txt).", rich_help_panel=_GS),
    box_threshold: Optional[float] = typer.Option(None, "--box-threshold", min=0, max=1, help="Box score threshold (default 0.2).", rich_help_panel=_GS),
    class_threshold: list[str] = typer.Option([], "--class-threshold", help="Per-class threshold CLASS=T (repeatable).", rich_help_panel=_GS),
    prompt: list[str] = typer.Option([], "--prompt", help="Phrases of a class: CLASS=PHRASE[,PHRASE...] (repeatable; CLASS= leaves it unprompted).", rich_help_panel=_GS),
    short_side: Optional[int] = typer.Option(None, "--short-side", min=1, help="GroundingDINO input short side (default 512 Cityscapes, 800 otherwise).", rich_help_panel=_GS),
    max_side: Optional[int] = typer.Option(None, "--max-side", min=1, help="GroundingDINO input long-side cap (default 1024 / 1333).", rich_help_panel=_GS),
    nms_iou: Optional[float] = typer.Option(None, "--nms-iou", min=0, max=1, help="Per-class box NMS IoU (default: none, as the authors).", rich_help_panel=_GS),
    max_boxes: Optional[int] = typer.Option(None, "--max-boxes", min=1, help="Keep at most this many top-scoring boxes per image (default 300).", rich_help_panel=_GS),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per forward pass (default 4).", rich_help_panel=_GS),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (auto: the rank's GPU, else CPU).", rich_help_panel=_GS),
    precision: Optional[Precision] = typer.Option(None, "--precision", help="auto: bf16 on CUDA.", rich_help_panel=_GS),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted run."),
    checkpoint_every: int = typer.Option(16, "--checkpoint-every", min=1, help="Images between checkpoints of the partial file (an interrupted run resumes from the last one)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even though later rounds exist (they become invalid)."),
    json_out: bool = JSON,
) -> None:
    """Label the train images with a foundation model (or import labels): round 0.

    Under torchrun (torchrun --nproc_per_node N -m a2lc_cli pseudolabel ...) each
    rank labels a slice of the images and rank 0 merges them into one dataset.h5.
    """
    rank, _ = dist_env()
    if rank > 0:
        ui.set_quiet(True)
    labeler, precision = chosen(labeler), chosen(precision)
    ws = workspace(ctx, must_exist=False)
    cfg = ws.ensure_config()
    if labeler is not None:
        cfg = set_option(cfg, "pseudolabel.labeler", labeler)
    if import_dir is not None:
        cfg = set_option(cfg, "pseudolabel.import_dir", str(import_dir.expanduser().absolute()))
    if mask_dir is not None:
        cfg = set_option(cfg, "pseudolabel.mask_dir", str(mask_dir.expanduser().absolute()))
    cfg = _grounded_sam_options(
        cfg,
        sam_checkpoint=_abs(sam_checkpoint), sam_type=_abs_if_file(sam_type), gdino_checkpoint=_abs(gdino_checkpoint),
        gdino_config=_abs_if_file(gdino_config), text_encoder=_abs(text_encoder), box_threshold=box_threshold,
        short_side=short_side, max_side=max_side, nms_iou=nms_iou, max_boxes=max_boxes, batch_size=batch_size,
        device=device, precision=precision,
        thresholds={k: _float(v, f"--class-threshold {k}") for k, v in _pairs(class_threshold, "--class-threshold")},
        prompts={k: [p.strip() for p in v.split(",") if p.strip()] for k, v in _pairs(prompt, "--prompt")},
    )
    if ws.dataset_path.exists() and ws.rounds_present() and not force:
        raise A2LCError(
            f"{ws.dataset_path} exists and rounds {ws.rounds_present()} were computed from it; "
            "use --force to rebuild (or a new workspace)"
        )
    # under torchrun rank 0 holds the workspace lock; the other ranks write only their shard files
    with ws.lock() if rank == 0 else contextlib.nullcontext():
        summary = run_pseudolabel(ws.dataset_path, cfg, labeler=labeler, resume=resume, flush_every=checkpoint_every,
                                  inputs=stage_inputs(ctx))
        if rank == 0:
            ws.save_config(cfg)
    if rank > 0:
        return
    for w in summary.warnings:
        ui.warn(w)
    if json_out:
        ui.print_json(vars(summary))
    else:
        ui.out.print(f"pseudolabel ({ui.esc(summary.labeler)}): {summary.images} images, {summary.masks} masks → {ui.esc(ws.dataset_path)}")


def _grounded_sam_options(cfg: Config, *, thresholds: dict, prompts: dict, **options: object) -> Config:
    """``cfg`` with the given Grounded SAM options (``None`` = unchanged) set in ``pseudolabel.grounded_sam``."""
    data = cfg.model_dump(mode="json")
    gs = data["pseudolabel"]["grounded_sam"]
    gs.update({k: v for k, v in options.items() if v is not None})
    gs["thresholds"].update(thresholds)
    gs["prompts"].update(prompts)
    return parse_config(data, where="pseudolabel options")


def _pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise A2LCError(f"{option} expects CLASS=VALUE (got {item!r})")
        out.append((key.strip(), value))
    return out


def _float(value: str, option: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise A2LCError(f"{option}: {value!r} is not a number") from None


def _abs(path: Optional[Path]) -> Optional[str]:
    """Paths are stored absolute so the workspace config works from any directory."""
    return str(path.expanduser().absolute()) if path is not None else None


def _abs_if_file(value: Optional[str]) -> Optional[str]:
    """A registry name stays as given; an existing file becomes an absolute path."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p.absolute()) if p.is_file() else value
