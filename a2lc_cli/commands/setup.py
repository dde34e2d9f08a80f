"""``a2lc init``, ``a2lc status`` and ``a2lc config``: start a workspace and see where it stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ..config import Config, describe_method, dump_config, set_option
from ..errors import A2LCError
from ..status import workspace_status
from ..config import PRESETS, Preset
from ..data import SOURCES
from ..labelers import LABELERS
from ._common import JSON, choices, chosen, workspace

Source = choices("Source", SOURCES)  # the registries' names: --help lists them, a wrong one is one line
BenchmarkPreset = choices("BenchmarkPreset", Preset)
LabelerName = choices("LabelerName", LABELERS)
Method = choices("Method", PRESETS)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)
    config_app = typer.Typer(help="Show or change the workspace config.", no_args_is_help=True)
    config_app.command("show")(config_show)
    config_app.command("set")(config_set)
    app.add_typer(config_app, name="config")


def init(
    ctx: typer.Context,
    source: Source = typer.Option("synthetic", "--source", help="Where the images come from."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset root (real sources)."),
    preset: Optional[BenchmarkPreset] = typer.Option(None, "--preset", help="Built-in benchmark preset (default: city)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the benchmark generator and of training."),
    n_train: Optional[int] = typer.Option(None, "--n-train", help="Synthetic: train images."),
    n_val: Optional[int] = typer.Option(None, "--n-val", help="Synthetic: validation images."),
    height: Optional[int] = typer.Option(None, "--height", help="Synthetic: image height."),
    width: Optional[int] = typer.Option(None, "--width", help="Synthetic: image width."),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="Folder source: class names, one per line."),
    labeler: Optional[LabelerName] = typer.Option(None, "--labeler", help="Who makes the round-0 pseudo-labels."),
    method: Method = typer.Option("a2lc", "--method", help="Method preset (a2lc+: A²LC with the calibrated LCM selection)."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Masks queried per round (default: a share of all masks)."),
    rounds: int = typer.Option(5, "--rounds", help="Rounds of correction."),
    set_: list[str] = typer.Option([], "--set", help="Any config key: --set lcm.alpha=0.3 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing config."),
    json_out: bool = JSON,
) -> None:
    """Create a workspace config (every other command uses the defaults when there is none)."""
    ws = workspace(ctx, must_exist=False)
    source, preset, labeler, method = chosen(source), chosen(preset), chosen(labeler), chosen(method)
    if preset is not None and source != "synthetic":
        raise A2LCError(f"--preset chooses the built-in benchmark; it does not go with --source {source}")
    if ws.config_path.exists() and not force:
        raise A2LCError(f"{ws.config_path} exists; use --force to replace it or `a2lc config set` to change it")
    if ws.dataset_path.exists() and force:
        raise A2LCError(
            f"{ws.dataset_path} exists: a new config would not match it; start a new workspace (-w DIR)"
        )
    raw = {
        "seed": seed,
        "source": {
            "kind": source,
            "root": _abs(root),
            "preset": (preset or "city") if source == "synthetic" else None,
            "n_train": n_train,
            "n_val": n_val,
            "height": height,
            "width": width,
            # relative to the cwd when it exists there, else kept relative to the dataset root
            "classes_file": _abs(classes_file) if classes_file and classes_file.expanduser().exists() else (
                str(classes_file) if classes_file else None),
        },
        "pseudolabel": {"labeler": labeler},
        "method": {"preset": method, "budget": budget, "rounds": rounds},
    }
    from ..config import parse_config

    cfg = parse_config(raw, where="init options")
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise A2LCError(f"--set expects KEY=VALUE (got {item!r})")
        cfg = set_option(cfg, key.strip(), value)
    if cfg.source.kind != "synthetic":
        from ..data import open_source

        if cfg.pseudolabel.labeler == "simulate":  # refused now, not at the pseudolabel the hint would name
            raise A2LCError(f"the simulate labeler needs the built-in synthetic source (not {cfg.source.kind!r}); "
                            f"use --labeler import (with --import-dir at pseudolabel) or --labeler grounded-sam")
        open_source(cfg)  # validate the dataset root and layout now
    ws.root.mkdir(parents=True, exist_ok=True)
    with ws.lock("a2lc init"):  # never change the config under a running command
        ws.save_config(cfg)
    from ..stages import pseudolabel_command

    from ..hints import localise

    nxt = localise(pseudolabel_command(cfg))  # with -w when this is not the workspace a bare `a2lc` finds
    if json_out:
        ui.print_json({"workspace": str(ws.root), "config": cfg.model_dump(mode="json"), "next": nxt})
    else:
        ui.out.print(ui.esc(f"initialised workspace {ws.root} ({cfg.source.kind}"
                            + (f", preset {cfg.source.preset}" if cfg.source.kind == "synthetic" else f", {cfg.source.root}")
                            + f", method {cfg.method.preset}); next: {nxt}"), soft_wrap=True)  # one line to copy


def _abs(path: Optional[Path]) -> Optional[str]:
    """Paths are stored absolute so the workspace config works from any directory."""
    return str(path.expanduser().absolute()) if path is not None else None


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
    if (st["dataset"] or {}).get("outdated"):  # an older built-in benchmark: its way out, with -w likewise
        st["dataset"]["outdated"] = localise(st["dataset"]["outdated"])
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
        if d.get("outdated"):
            ui.warn(d["outdated"])
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


STATUS_LEGEND = ("legend: ✓ done, · missing, stale = an input changed since (rerun it), "
                 "waiting = people's answers incomplete, blank = not a stage of this round, — = no value")


def _cell(v: str | None) -> str:
    return {"done": "✓", "missing": "·", "stale": "stale", "partial": "partial", None: ""}.get(v, v or "")


def config_show(ctx: typer.Context, json_out: bool = JSON) -> None:
    """Print the workspace config as JSON (with --json: {"workspace", "path", "exists", "config"})."""
    ws = workspace(ctx)
    cfg = ws.config()
    if json_out:
        ui.print_json({"workspace": str(ws.root), "path": str(ws.config_path), "exists": ws.config_path.exists(),
                       "config": cfg.model_dump(mode="json")})
    else:
        print(dump_config(cfg), end="")


def config_set(
    ctx: typer.Context,
    assignments: list[str] = typer.Argument(..., help="KEY=VALUE pairs, e.g. lcm.alpha=0.3 method.budget=500"),
    json_out: bool = JSON,
) -> None:
    """Change config keys (validated; the file is rewritten atomically)."""
    ws = workspace(ctx)
    cfg = ws.config()
    keys = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise A2LCError(f"expected KEY=VALUE (got {item!r})")
        cfg = set_option(cfg, key.strip(), value)
        keys.append(key.strip())
    with ws.lock("a2lc config set"):
        ws.save_config(cfg)
    data = cfg.model_dump(mode="json")
    changed = {}
    for key in keys:  # the values as stored (parsed and validated), not as typed
        node = data
        for part in key.split("."):
            node = node[part]
        changed[key] = node
    if json_out:
        ui.print_json({"workspace": str(ws.root), "path": str(ws.config_path), "changed": changed,
                       "config": data})
    else:
        ui.out.print(ui.esc(json.dumps(changed)))
