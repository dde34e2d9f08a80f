"""``a2lc round``, ``a2lc run``, ``a2lc demo``, ``a2lc export``, ``a2lc report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ui
from ..errors import A2LCError
from ._common import JSON, require_round, round_option, workspace


def register(app: typer.Typer) -> None:
    app.command("round")(round_)
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("export")(export)
    app.command("report")(report)


def _stage_printer(r: int, stage: str, what: str) -> None:
    ui.info(f"[bold]round {r}[/] · {stage}")


def _metrics_line(res: dict) -> str:
    met = res["metrics"]
    parts = [f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
             for k, v in met.items() if v is not None]  # e.g. no LCM accuracy when nothing was corrected
    ran = [s for s, o in res["stages"].items() if o == "ran"]
    return f"round {res['round']}: ran {', '.join(ran) or 'nothing (up to date)'}" + (f"; {', '.join(parts)}" if parts else "")


def round_(
    ctx: typer.Context,
    r: Optional[int] = round_option("Round to run (0 = pseudo-labels + θ_0)."),
    force: bool = typer.Option(False, "--force", help="Redo every stage of the round, even those up to date."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    json_out: bool = JSON,
) -> None:
    """Run the missing or stale stages of round r in order (acquire → query → lcm → train → evaluate)."""
    from ..rounds import run_round

    ws = workspace(ctx)
    r = require_round(r, "round")
    cfg = ws.ensure_config()
    with ws.lock():
        res = run_round(ws, cfg, r, force=force, device=device, on_stage=None if json_out else _stage_printer)
    if json_out:
        ui.print_json(res)
    else:
        ui.out.print(ui.esc(_metrics_line(res)))


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
            res = run_round(ws, cfg, r, device=device, on_stage=None if json_out else _stage_printer)
            results.append(res)
            if not json_out:
                ui.out.print(ui.esc(_metrics_line(res)))
    if json_out:
        ui.print_json({"rounds": results})


def demo(
    ctx: typer.Context,
    preset: str = typer.Option("city", "--preset", help="Built-in benchmark: city | voc."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Rounds of correction."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and of training."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="Masks per round for both methods (default: 4% of all masks)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    set_: list[str] = typer.Option([], "--set", help="A config key for every method, e.g. --set source.n_train=100 "
                                   "(repeatable; not method.*)."),
    methods: str = typer.Option("a2lc,alc", "--methods", help="Comma-separated method presets to compare: "
                                "a2lc, alc, a2lc+ (A²LC with the calibrated LCM). Each adds its rounds' time."),
    json_out: bool = JSON,
) -> None:
    """A²LC vs ALC for 5 rounds on the built-in data: progress, a per-round table, a report with plots."""
    from ..demo import demo_json, parse_methods, run_demo
    from ..report import method_label

    method_list = parse_methods(methods)

    if preset not in ("city", "voc"):
        raise A2LCError(f"--preset must be city or voc (got {preset!r})")
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
    for key, label in (("data_miou", "Data mIoU"), ("model_miou", "Model mIoU"), ("budget_used", "masks queried")):
        for m, run_ in runs.items():
            rows.append([method_label(m), label] + [r.get(key) for r in run_["rounds"]])
    title = " vs ".join(method_label(m) for m in method_list)
    ui.out.print(ui.table(f"{title} on the built-in {preset} benchmark ({res['budget']} masks per round)", cols, rows))
    ui.out.print(f"report with plots: {ui.esc(res['report'])}  ({res['minutes']:.1f} min)")


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
    r = latest_label_round(ws) if r is None else r
    res = export_round(ws, r, out)
    if json_out:
        ui.print_json(res)
    else:
        m = res["masks"]
        ui.out.print(ui.esc(f"exported round {r}: {ui.plural(res['images'], 'label map')} ({res['convention']}) to {res['out']}; "
                            f"masks: {m['pseudo']} pseudo, {m['human']} human, {m['lcm']} lcm; history.csv: "
                            f"{ui.plural(res['history_rows'], 'row')}, {ui.plural(res['changes'], 'label change')}"))


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
