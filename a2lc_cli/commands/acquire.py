"""``a2lc acquire``: score the masks with θ_{r-1} (``a2lc query`` is in query.py)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import typer

from .. import ui
from ..config import AcquisitionName
from ..errors import A2LCError
from ._common import JSON, choices, round_option, stage_inputs, stage_round, chosen

Acquisition = choices("Acquisition", AcquisitionName)


def register(app: typer.Typer) -> None:
    app.command("acquire")(acquire)


def acquire(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round (≥ 1): scores masks with the model of round r-1."),
    fn: Optional[Acquisition] = typer.Option(None, "--fn", help="Acquisition function (default: the method's)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda[:N] (default: cuda when available)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per forward pass (default 4; on the CPU fewer for images over 0.5 Mpx)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Background image-reading processes."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Also checkpoint every N images (default: every 2 minutes); an interrupted pass resumes there."),
    json_out: bool = JSON,
) -> None:
    """Score every mask with the acquisition function (one streaming pass of θ_{r-1}).

    Under torchrun (torchrun --nproc_per_node N -m a2lc_cli acquire ...) each rank
    scores a slice of the images and rank 0 writes acquire.h5.
    """
    from ..acquire import run_acquire
    from ..stages import ACQUIRE

    rank = int(os.environ.get("RANK", 0) or 0)
    if rank > 0:
        ui.set_quiet(True)
    ws, cfg, r = stage_round(ctx, r, ACQUIRE)
    if r >= 1:
        from ..rounds import answers_block, people_answers

        if people_answers(ws, r):  # a new acquisition would strand them: query.h5 never drops people's answers
            q = ws.path("query", r)
            raise A2LCError(answers_block(ws, cfg, r) or (  # stale: the way out status names too
                f"{q} holds {ui.plural(people_answers(ws, r), 'answer')} of people for round {r}'s current "
                f"acquisition; a new one would leave them behind. To recompute it anyway, keep them "
                f"(`a2lc export-answers --r {r} --out FILE`) and move {q} aside first"))
    # under torchrun rank 0 holds the workspace lock; the other ranks write only their shard files
    with ws.lock() if rank == 0 else contextlib.nullcontext():
        res = run_acquire(ws, cfg, r, fn=chosen(fn), device=device, batch_size=batch_size, workers=workers,
                          checkpoint_images=checkpoint_every, inputs=stage_inputs(ctx))
    if rank > 0:
        return
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(f"acquire r{r} ({res['fn']}): {res['eligible']} of {res['masks']} masks eligible, "
                            f"{res['seconds']:.1f} s on {res['device']}" + (f", KL {res['kl']:.3f}" if res["kl"] is not None else "")))
