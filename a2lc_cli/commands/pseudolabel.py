"""``a2lc pseudolabel``: build the correction units and round-0 labels (dataset.h5)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ..config import set_option
from ..errors import A2LCError
from ..labelers import LABELERS
from ..pseudolabel import run_pseudolabel
from ._common import JSON, workspace


def register(app: typer.Typer) -> None:
    app.command("pseudolabel")(pseudolabel)


def pseudolabel(
    ctx: typer.Context,
    labeler: Optional[str] = typer.Option(None, "--labeler", help="simulate | import | grounded-sam (default: by source)."),
    import_dir: Optional[Path] = typer.Option(None, "--import-dir", help="import: folder of pseudo-label PNGs (<stem>.png)."),
    mask_dir: Optional[Path] = typer.Option(None, "--mask-dir", help="import: folder of mask-id PNGs (<stem>.png, 16-bit)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted run."),
    force: bool = typer.Option(False, "--force", help="Rebuild even though later rounds exist (they become invalid)."),
    json_out: bool = JSON,
) -> None:
    """Label the train images with a foundation model (or import labels): round 0."""
    if labeler is not None and labeler not in LABELERS:
        raise A2LCError(f"unknown labeler {labeler!r} (choose from {', '.join(LABELERS)})")
    ws = workspace(ctx)
    cfg = ws.ensure_config()
    if labeler is not None:
        cfg = set_option(cfg, "pseudolabel.labeler", labeler)
    if import_dir is not None:
        cfg = set_option(cfg, "pseudolabel.import_dir", str(import_dir.expanduser().absolute()))
    if mask_dir is not None:
        cfg = set_option(cfg, "pseudolabel.mask_dir", str(mask_dir.expanduser().absolute()))
    if ws.dataset_path.exists() and ws.rounds_present() and not force:
        raise A2LCError(
            f"{ws.dataset_path} exists and rounds {ws.rounds_present()} were computed from it; "
            "use --force to rebuild (or a new workspace)"
        )
    with ws.lock():
        summary = run_pseudolabel(ws.dataset_path, cfg, labeler=labeler, resume=resume)
        ws.save_config(cfg)
    if json_out:
        ui.print_json(vars(summary))
    else:
        ui.out.print(f"pseudolabel ({summary.labeler}): {summary.images} images, {summary.masks} masks → {ws.dataset_path}")
