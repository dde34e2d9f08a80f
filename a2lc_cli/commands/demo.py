"""``a2lc demo``: A²LC vs ALC on the built-in data, end to end, with a report."""

from __future__ import annotations

from typing import Optional

import typer

from .. import ui
from ..errors import A2LCError
from ..config import BUDGET_SHARE, Preset
from ._common import JSON, choices, chosen, workspace

DemoPreset = choices("DemoPreset", Preset)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    preset: DemoPreset = typer.Option("city", "--preset", help="Built-in benchmark."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Rounds of correction."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and of training."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="Masks per round for both methods (default: the preset's share of all masks: "
                                          + ", ".join(f"{p} {BUDGET_SHARE[p]:.0%}" for p in Preset.__args__) + ")."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    set_: list[str] = typer.Option([], "--set", help="A config key for every method, e.g. --set source.n_train=100 "
                                   "(repeatable; not method.*)."),
    methods: str = typer.Option("a2lc,alc", "--methods", help="Comma-separated method presets to compare: "
                                "a2lc, alc, a2lc+ (A²LC with the calibrated LCM). Each adds its rounds' time."),
    json_out: bool = JSON,
) -> None:
    """A²LC vs ALC for 5 rounds on the built-in data: progress, a per-round table, a report with plots."""
    from ..demo import benchmark_name, demo_json, parse_methods, run_demo
    from ..report import method_label, table_rows

    method_list = parse_methods(methods)

    preset = chosen(preset)
    options = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise A2LCError(f"--set expects KEY=VALUE (got {item!r})")
        options[key.strip()] = value
    ws = workspace(ctx, must_exist=False)
    res = run_demo(ws.root, preset=preset, seed=seed, rounds=rounds, budget=budget, device=device, options=options,
                   methods=method_list)
    if json_out:
        ui.print_json(demo_json(res))
        ui.info(f"report: {ui.esc(res['report'])}")
        return
    runs = res["runs"]
    n = max(len(r["rounds"]) for r in runs.values())
    cols = ["method", "metric"] + ["Init." if k == 0 else f"{k}R" for k in range(n)]
    rows = []
    for key, label, m, run_ in table_rows(runs):  # with an "LCM corrections" row per method that has LCM
        rows.append([method_label(m), label] + [r.get(key) for r in run_["rounds"]])
    title = " vs ".join(method_label(m) for m in method_list)
    ui.out.print(ui.table(f"{title} on the {benchmark_name(res)} ({res['budget']} masks per round)", cols, rows))
    ui.out.print(f"report with plots: {ui.esc(res['report'])}  ({res['minutes']:.1f} min)")
