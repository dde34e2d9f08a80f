"""``a2lc export``: the corrected label maps of a round and a per-mask history."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ._common import JSON, round_artifact, round_option, workspace


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="Folder to write the label PNGs and history.csv to."),
    r: Optional[int] = round_option("Round whose labels to export (default: the latest with answers)."),
    json_out: bool = JSON,
) -> None:
    """Write the corrected label maps (dataset's own PNG convention) and a per-mask history CSV."""
    from ..evaluate import latest_label_round
    from ..export import export_round

    ws = workspace(ctx)
    if r is not None and r >= 1:  # the shared round check of the commands that read a round's artifact
        from ..stages import QUERY

        ws = round_artifact(ctx, r, QUERY, what="export --r")
    r = latest_label_round(ws) if r is None else r
    res = export_round(ws, r, out)
    if json_out:
        ui.print_json(res)
    else:
        m = res["masks"]
        ui.out.print(ui.esc(f"exported round {r}: {ui.plural(res['images'], 'label map')} ({res['convention']}) to {res['out']}; "
                            f"masks: {m['pseudo']} pseudo, {m['human']} human, {m['lcm']} lcm; history.csv: "
                            f"{ui.plural(res['history_rows'], 'row')}, {ui.plural(res['changes'], 'label change')}"))
