"""``a2lc status``: what exists for each round and what to run next."""

from __future__ import annotations

from typing import Optional

import typer

from .. import ui
from ..config import Config, describe_method
from ..errors import A2LCError
from ..status import workspace_status
from ._common import JSON, workspace


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def _damage(st: dict) -> Optional[str]:
    """The first damaged artifact reported by ``workspace_status`` (None when all are readable)."""
    if isinstance(st.get("dataset"), dict) and "error" in st["dataset"]:
        return st["dataset"]["error"]
    return next((r["error"] for r in st.get("rounds", []) if r.get("error")), None)


def status(ctx: typer.Context, json_out: bool = JSON, verify: bool = typer.Option(
        False, "--verify", help="Also read every per-pixel map of dataset.h5 through its checks (slower).")) -> None:
    """What exists for each round and what to run next (exit status 2 when an artifact is damaged)."""
    ws = workspace(ctx)
    st = workspace_status(ws, verify=verify)
    from ..hints import localise

    st["next"] = localise(st["next"])  # a command that works when copied: with -w unless a bare `a2lc` finds ws
    for key in ("outdated", "changed"):  # an older built-in benchmark, or other train images: the way out, with -w
        if (st["dataset"] or {}).get(key):
            st["dataset"][key] = localise(st["dataset"][key])
    if json_out:
        damage = _damage(st)
        if damage is not None:  # one JSON object on stdout, the damage named in it, and exit status 2
            st["error"] = damage
        ui.print_json(st)
        if damage is not None:
            from rich.text import Text

            ui.err.print(Text("error: ", style="bold red") + Text(damage), soft_wrap=True)
            raise typer.Exit(2)
        return
    cfg = st["config"]
    ui.out.print(f"workspace [bold]{ui.esc(ws.root)}[/] — source {cfg['source']['kind']}"
                 + (f" ({cfg['source']['preset']})" if cfg["source"]["kind"] == "synthetic" else "")
                 + f", method {describe_method(Config.model_validate(cfg).method)}")
    d = st["dataset"]
    if d is None:
        ui.out.print("dataset: not built yet")
    elif "error" in d:
        ui.out.print(f"dataset: [red]{ui.esc(d['error'])}[/]")
    else:
        ui.out.print(f"dataset: {d['images']} train images, {d['masks']} masks, {d['classes']} classes"
                     + (", ground truth" if d["has_gt"] else ", no ground truth"))
        for key in ("outdated", "changed"):
            if d.get(key):
                ui.warn(d[key])
    from ..stages import STAGES

    names = [s.name for s in STAGES if s.per_round]  # the stages of rounds, in the registry's order
    rows = []
    for r in st["rounds"]:
        rows.append([r["round"]] + [_cell(r["stages"].get(s)) for s in names]
                    + [r.get("answers"), r.get("data_miou"), r.get("model_miou")])
    if rows:
        # two-line headers: the table fits 80 columns without cutting a header
        t = ui.table("rounds", ["round", *(n.replace("-", "\n") for n in names),
                                "answers", "data\nmIoU", "model\nmIoU"], rows)
        for col in t.columns:
            col.no_wrap = True
        # a header rule instead of a box: the widest cells (stale, waiting, damaged, 100.00) fit 80 columns
        from rich import box

        t.box, t.show_edge, t.pad_edge = box.SIMPLE_HEAD, False, False
        ui.out.print(t)
        ui.out.print(f"[dim]{STATUS_LEGEND}[/]")
    from ..status import lcm_line

    if lcm_line(st.get("lcm")):
        ui.out.print(ui.esc(lcm_line(st["lcm"])))
    ui.out.print(f"next: {ui.esc(st['next'] or 'nothing — all configured rounds are done')}", soft_wrap=True)
    _raise_if_damaged(st)


def _raise_if_damaged(st: dict) -> None:
    damage = _damage(st)
    if damage is not None:
        raise A2LCError(damage)


STATUS_LEGEND = ("legend: ✓ done, · missing, stale = an input (or lcm.selection) changed since (rerun it), "
                 "waiting = people's answers incomplete, blank = not a stage of this round, — = no value")


def _cell(v: str | None) -> str:
    return {"done": "✓", "missing": "·", "stale": "stale", "partial": "partial", None: ""}.get(v, v or "")
