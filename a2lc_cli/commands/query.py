"""``a2lc query``: select the top-B masks of round r and obtain the annotator's answers (or serve a page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ..errors import A2LCError
from ..config import QueryUnit
from ._common import JSON, choices, round_option, stage_inputs, stage_round, chosen

Annotator = choices("Annotator", ("gt", "human"))
Unit = choices("Unit", QueryUnit)


def register(app: typer.Typer) -> None:
    app.command("query")(query)


def query(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round (≥ 1)."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Masks to query: an integer or 'all' (default: the config's)."),
    annotator: Optional[Annotator] = typer.Option(None, "--annotator", help="gt (simulated from ground truth) | human."),
    unit: Optional[Unit] = typer.Option(None, "--unit", help="mask (A²LC) | pixel (ALC: representative pixel, expanded)."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write an annotation bundle for people to this folder."),
    answers: Optional[Path] = typer.Option(None, "--answers", help="Import a filled-in answers file (CSV or JSON)."),
    replace: bool = typer.Option(False, "--replace", help="Record answers that contradict stored ones (old ones stay in the log)."),
    force: bool = typer.Option(False, "--force", help="Re-select with a new --budget (only without people's answers)."),
    serve: bool = typer.Option(False, "--serve", help="Answer on a local web page (selects first if needed); Ctrl-C stops."),
    host: str = typer.Option("127.0.0.1", "--host", help="--serve: address to listen on (non-loopback needs --allow-remote)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="--serve: port (0 = any free port)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="--serve: allow a non-loopback --host; prints a token every request needs."),
    lease: float = typer.Option(120.0, "--lease", help="--serve: seconds a page holds its mask without activity before others get it."),
    json_out: bool = JSON,
) -> None:
    """Select the top-B masks of round r and obtain the annotator's answers."""
    from ..annotator import SIMULATED
    from ..query import parse_budget, run_query
    from ..stages import QUERY

    ws, cfg, r = stage_round(ctx, r, QUERY)
    annotator, unit = chosen(annotator), chosen(unit)
    if answers is not None and annotator == "gt":
        raise A2LCError("--answers imports people's answers; it does not go with --annotator gt")
    if export is not None and annotator == "gt":
        raise A2LCError("--export writes a bundle for people to answer; it does not go with --annotator gt")
    if serve and (annotator == "gt" or answers is not None or export is not None):
        raise A2LCError("--serve is the human annotator's page; it does not go with --annotator gt, --answers or --export")
    if serve:
        from ..serve import check_bind, sigterm_as_ctrl_c

        check_bind(host, allow_remote=allow_remote, lease_s=lease)
        sigterm_as_ctrl_c()  # before the selection and the server start, not only once serving
    with ws.lock():
        res = run_query(ws, cfg, r, budget=parse_budget(budget), annotator="human" if answers or serve or export else annotator,
                        unit=unit, export_dir=export, answers_file=answers, replace=replace, force=force,
                        inputs=stage_inputs(ctx))
        if serve:
            _serve(ws, cfg, r, res, host=host, port=port, allow_remote=allow_remote, lease=lease, json_out=json_out,
                   inputs=stage_inputs(ctx))
            return
    if json_out:
        ui.print_json(res)
        return
    who = ", ".join(f"{n} by {'the simulated annotator' if a == SIMULATED else a}" for a, n in res["answered_by"].items())
    line = (f"query r{r}: {res['selected']} masks selected, {res['answered']} answered"
            + (f" ({who})" if who else "") + f"; {res['unit']}-level")
    if "imported" in res:
        line += f"; imported {res['imported']} new, {res['unchanged']} unchanged"
        if res.get("file_answers") == 0:  # exit 0 (nothing is wrong with the file), but never a silent no-op
            line += " (the answers file had no answers filled in: fill in the answer column, then import it again)"
    ui.out.print(ui.esc(line + f"; {ui.plural(res['changed'], 'label')} changed; {res['remaining_unqueried']} masks left unqueried"))
    if "bundle" in res:
        ui.out.print(ui.esc(f"bundle written to {res['bundle']}: fill in answers.csv, then `{res['import_command']}`"),
                     soft_wrap=True)  # the command stays one line to copy


def _serve(ws, cfg, r: int, res: dict, *, host: str, port: int, allow_remote: bool, lease: float, json_out: bool,
           inputs=None) -> None:
    """Run the annotation page until Ctrl-C (the caller holds the workspace lock)."""
    from ..serve import serve_query

    def started(server) -> None:
        if json_out:  # one line, printed while the server keeps running: scripts read it with readline
            typer.echo(json.dumps({"round": r, "url": server.url, "token": server.token,
                                   "selected": res["selected"], "answered": res["answered"]}))
            return
        ui.out.print(f"query r{r}: {res['selected']} masks selected, {res['answered']} answered; "
                     f"annotate at {ui.esc(server.url)}  (Ctrl-C to stop)")
        if server.token:
            ui.out.print(f"token: {ui.esc(server.token)} (every request must carry it; share the URL only with annotators)")

    def answered(a: dict) -> None:
        sec = "" if a["seconds"] is None else f", {a['seconds']:.1f} s"
        what = "void (several classes)" if a["note"] else a["label"]
        ui.info(ui.esc(f"{a['annotator']}: mask {a['mask_id']} → {what} ({a['status']}{sec})"))

    done = serve_query(ws, cfg, r, host=host, port=port, allow_remote=allow_remote, lease_s=lease,
                       on_start=started, on_answer=answered, inputs=inputs)
    ui.info(f"stopped: {ui.plural(done['saved_now'], 'answer')} saved in this session; "
            f"{done['answered']} of {done['budget']} answered")
