"""``a2lc init``: start a workspace (its config)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ..config import PRESETS, Preset, set_option
from ..data import SOURCES
from ..errors import A2LCError
from ..labelers import LABELERS
from ._common import JSON, choices, chosen, workspace

Source = choices("Source", SOURCES)  # the registries' names: --help lists them, a wrong one is one line
BenchmarkPreset = choices("BenchmarkPreset", Preset)
LabelerName = choices("LabelerName", LABELERS)
Method = choices("Method", PRESETS)


def register(app: typer.Typer) -> None:
    app.command("init")(init)


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
