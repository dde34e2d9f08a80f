"""``a2lc acquire`` and ``a2lc query``: score the masks with θ_{r-1}, ask the annotator about the top-B."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional, get_args

import typer

from .. import ui
from ..config import AcquisitionName
from ..errors import A2LCError
from ._common import JSON, require_round, round_option, workspace


def register(app: typer.Typer) -> None:
    app.command("acquire")(acquire)
    app.command("query")(query)


def acquire(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round (≥ 1): scores masks with the model of round r-1."),
    fn: Optional[str] = typer.Option(None, "--fn", help="Acquisition function: " + " | ".join(get_args(AcquisitionName)) + " (default: the method's)."),
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
    from ..rounds import check_order
    from ..stages import ACQUIRE

    rank = int(os.environ.get("RANK", 0) or 0)
    if rank > 0:
        ui.set_quiet(True)
    ws = workspace(ctx)
    r = require_round(r, "acquire")
    cfg = ws.ensure_config()
    if r >= 1:
        check_order(ws, cfg, r, ACQUIRE)
        from ..rounds import answers_block, people_answers

        if people_answers(ws, r):  # a new acquisition would strand them: query.h5 never drops people's answers
            q = ws.artifact(r, "query.h5")
            raise A2LCError(answers_block(ws, cfg, r) or (  # stale: the way out status names too
                f"{q} holds {ui.plural(people_answers(ws, r), 'answer')} of people for round {r}'s current "
                f"acquisition; a new one would leave them behind. To recompute it anyway, keep them "
                f"(`a2lc export-answers --r {r} --out FILE`) and move {q} aside first"))
    # under torchrun rank 0 holds the workspace lock; the other ranks write only their shard files
    with ws.lock() if rank == 0 else contextlib.nullcontext():
        res = run_acquire(ws, cfg, r, fn=fn, device=device, batch_size=batch_size, workers=workers,
                          checkpoint_images=checkpoint_every)
    if rank > 0:
        return
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(f"acquire r{r} ({res['fn']}): {res['eligible']} of {res['masks']} masks eligible, "
                            f"{res['seconds']:.1f} s on {res['device']}" + (f", KL {res['kl']:.3f}" if res["kl"] is not None else "")))


def query(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round (≥ 1)."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Masks to query: an integer or 'all' (default: the config's)."),
    annotator: Optional[str] = typer.Option(None, "--annotator", help="gt (simulated from ground truth) | human."),
    unit: Optional[str] = typer.Option(None, "--unit", help="mask (A²LC) | pixel (ALC: representative pixel, expanded)."),
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
    from ..rounds import check_order
    from ..stages import QUERY

    ws = workspace(ctx)
    r = require_round(r, "query")
    cfg = ws.ensure_config()
    if r >= 1:
        check_order(ws, cfg, r, QUERY)
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
                        unit=unit, export_dir=export, answers_file=answers, replace=replace, force=force)
        if serve:
            _serve(ws, cfg, r, res, host=host, port=port, allow_remote=allow_remote, lease=lease, json_out=json_out)
            return
    if json_out:
        ui.print_json(res)
        return
    who = ", ".join(f"{n} by {'the simulated annotator' if a == SIMULATED else a}" for a, n in res["answered_by"].items())
    line = (f"query r{r}: {res['selected']} masks selected, {res['answered']} answered"
            + (f" ({who})" if who else "") + f"; {res['unit']}-level")
    if "imported" in res:
        line += f"; imported {res['imported']} new, {res['unchanged']} unchanged"
    ui.out.print(ui.esc(line + f"; {ui.plural(res['changed'], 'label')} changed; {res['remaining_unqueried']} masks left unqueried"))
    if "bundle" in res:
        ui.out.print(ui.esc(f"bundle written to {res['bundle']}: fill in answers.csv, then `{res['import_command']}`"),
                     soft_wrap=True)  # the command stays one line to copy


def _serve(ws, cfg, r: int, res: dict, *, host: str, port: int, allow_remote: bool, lease: float, json_out: bool) -> None:
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
                       on_start=started, on_answer=answered)
    ui.info(f"stopped: {ui.plural(done['saved_now'], 'answer')} saved in this session; "
            f"{done['answered']} of {done['budget']} answered")
