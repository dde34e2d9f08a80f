"""``a2lc export-answers``: every human (and simulated) answer of every round as one CSV, for backup."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ._common import JSON, round_artifact, round_option, workspace


def register(app: typer.Typer) -> None:
    app.command("export-answers")(export_answers)


def export_answers(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV file to write (atomically); default: stdout."),
    r: Optional[int] = round_option("Only this round (default: every round)."),
    current: bool = typer.Option(False, "--current", help="Only the answers that count (not those replaced later)."),
    json_out: bool = JSON,
) -> None:
    """Export the answer logs (round, mask, image, answer, annotator, time, ...) to CSV.

    Reads only: it never waits for a running command. With --r R --current the file is an
    answers file that `a2lc query --r R --answers FILE` imports again.
    """
    from ..answers_backup import export_answers as run

    ws = workspace(ctx)
    if r is not None:  # the shared round check of the commands that read a round's artifact
        from ..stages import QUERY

        ws = round_artifact(ctx, r, QUERY, what="export-answers --r")
    res = run(ws, out, r=r, current_only=current)
    if json_out:
        ui.print_json(res)
    elif out is None:
        typer.echo(res["csv"], nl=False)
    else:
        rounds = ", ".join(f"r{k}: {v}" for k, v in res["per_round"].items()) or "no answers yet"
        ui.out.print(ui.esc(f"exported {ui.plural(res['rows'], 'answer')} to {out} ({rounds})"))
