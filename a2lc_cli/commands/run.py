"""``a2lc run``: rounds 0..N, each as ``a2lc round`` runs it."""

from __future__ import annotations

from typing import Optional

import typer

from .. import ui
from ._common import JSON, stage_inputs, workspace
from .round import _metrics_line, _stage_printer


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    ctx: typer.Context,
    rounds: Optional[int] = typer.Option(None, "--rounds", min=0, help="Last round (default: the config's, 5)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    json_out: bool = JSON,
) -> None:
    """Run rounds 0..N, skipping what is already done."""
    from ..rounds import run_round

    ws = workspace(ctx)
    cfg = ws.ensure_config()
    last = cfg.method.rounds if rounds is None else rounds
    results = []
    with ws.lock():
        for r in range(0, last + 1):
            res = run_round(ws, cfg, r, device=device, on_stage=None if json_out else _stage_printer,
                            inputs=stage_inputs(ctx))
            results.append(res)
            if not json_out:
                ui.out.print(ui.esc(_metrics_line(res)))
    if json_out:
        ui.print_json({"rounds": results})
