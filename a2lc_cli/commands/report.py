"""``a2lc report``: the saved metrics of a workspace (or of the workspaces inside it) as report.md and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ._common import JSON, workspace


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.md and the plots (default: <workspace>/report)."),
    json_out: bool = JSON,
) -> None:
    """Report the saved metrics of a workspace (or of the workspaces inside it, e.g. a demo folder)."""
    from ..report import collect_run, find_runs, write_report

    ws = workspace(ctx)
    runs = {name: collect_run(w) for name, w in find_runs(ws.root).items()}
    path = write_report(out or ws.root / "report", runs)
    if json_out:
        ui.print_json({"report": str(path), "runs": runs})
    else:
        ui.out.print(f"report written to {ui.esc(path)}")
