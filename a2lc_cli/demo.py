"""``a2lc demo``: A²LC against the ALC baseline on the built-in benchmark, same data, same θ_0, same budget.

One workspace per method under the demo folder (``a2lc/`` and ``alc/`` by
default; ``--methods a2lc,alc,a2lc+`` adds A²LC with the calibrated LCM) share
round 0 (the pseudo-labels and θ_0 are computed once and copied), then run their
rounds side by side. A report with the paper-style table and plots is written
to ``report/``. Rerunning the demo continues where it stopped.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from . import ui
from .config import Config, set_option
from .errors import A2LCError
from .report import collect_run, method_label, write_report
from .rounds import run_round
from .workspace import Workspace

METHODS = ("a2lc", "alc")
DESCRIPTIONS = {
    "a2lc": "A²LC = ABC acquisition + mask-level query + LCM",
    "alc": "ALC = SIM acquisition + pixel-level query, no LCM",
    "a2lc+": "A²LC+ = A²LC with the calibrated LCM selection (ψ on all answers, per-class thresholds "
             "with a precision bound)",
}


def parse_methods(text: str) -> tuple[str, ...]:
    """``a2lc,alc,a2lc+`` → the method presets, in order; A2LCError on an unknown or repeated one."""
    from .config import PRESETS

    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    if not methods:
        raise A2LCError("--methods needs at least one method preset")
    for m in methods:
        if m not in PRESETS:
            raise A2LCError(f"--methods: unknown method {m!r} (choose from {', '.join(PRESETS)})")
    if len(set(methods)) != len(methods):
        raise A2LCError(f"--methods: a method is given twice ({text!r})")
    return methods


def demo_config(*, preset: str, seed: int, method: str, budget: int | None, rounds: int,
                options: dict[str, str] | None = None) -> Config:
    """The config of one demo workspace: built-in data, the method preset, the shared budget.

    ``options``: dotted config keys set for both methods (``train.iterations`` → ``"200"``);
    the method and its switches are the demo's to set.
    """
    cfg = Config()
    for key, value in (options or {}).items():
        if key.split(".")[0] == "method" or key == "seed":
            raise A2LCError(f"--set {key}: the demo sets the method, budget, rounds and seed itself")
        cfg = set_option(cfg, key, value)
    cfg.seed = seed
    cfg.source.preset = preset  # type: ignore[assignment]
    cfg.method.preset = method  # type: ignore[assignment]
    cfg.method.budget = budget
    cfg.method.rounds = rounds
    return cfg


def share_round0(src: Workspace, dst: Workspace) -> None:
    """Copy the dataset and round 0 (θ_0, its log and metrics) so both methods start identically."""
    dst.root.mkdir(parents=True, exist_ok=True)
    if not dst.dataset_path.exists():
        shutil.copy2(src.dataset_path, dst.dataset_path)
    r0 = dst.round_dir(0)
    r0.mkdir(parents=True, exist_ok=True)
    for f in src.round_dir(0).iterdir():
        if f.is_file() and not f.name.startswith(".") and not (r0 / f.name).exists():
            shutil.copy2(f, r0 / f.name)


def run_demo(root: Path, *, preset: str = "city", seed: int = 0, rounds: int = 5, budget: int | None = None,
             device: str | None = None, options: dict[str, str] | None = None,
             methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Run the methods (default A²LC and ALC) for ``rounds`` rounds; return per-method per-round results and the report path."""
    root = Path(root)
    methods = tuple(methods)
    spaces = {m: Workspace(root / m) for m in methods}
    cfgs = {m: demo_config(preset=preset, seed=seed, method=m, budget=budget, rounds=rounds, options=options)
            for m in methods}
    t0 = time.perf_counter()
    first = methods[0]
    for m in methods:
        spaces[m].root.mkdir(parents=True, exist_ok=True)
        spaces[m].save_config(cfgs[m])
    from .labelers.simulate import NOISE_VERSION

    ui.info(f"built-in benchmark v{NOISE_VERSION} (`{preset}`, seed {seed}; docs/benchmark.md)")
    with spaces[first].lock("a2lc demo"):
        ui.info(f"[bold]round 0[/]: pseudo-labels and θ_0 (shared by all methods)")
        run_round(spaces[first], cfgs[first], 0, device=device)
    for m in methods[1:]:
        share_round0(spaces[first], spaces[m])
    if budget is None:  # the same budget for both: fix the default share now
        from .query import default_budget
        from .state import Dataset

        with Dataset(spaces[first].dataset_path) as ds:
            b = default_budget(cfgs[first], ds.n_masks)
        for m in methods:
            cfgs[m].method.budget = b
            spaces[m].save_config(cfgs[m])
    for r in range(1, rounds + 1):
        line = []
        for m in methods:
            with spaces[m].lock("a2lc demo"):
                ui.info(f"[bold]round {r}[/]: {method_label(m)}")
                res = run_round(spaces[m], cfgs[m], r, device=device)
            met = res["metrics"]
            line.append(f"{method_label(m)} data {met.get('data_miou', float('nan')):.2f} / model {met.get('model_miou', float('nan')):.2f}")
        ui.info(f"round {r}: " + " | ".join(line))
    runs = {m: collect_run(spaces[m]) for m in methods}
    minutes = (time.perf_counter() - t0) / 60
    notes = (f"Built-in `{preset}` benchmark v{NOISE_VERSION}, seed {seed}, {rounds} rounds, budget {cfgs[first].method.budget} masks per "
             f"round for every method; same pseudo-labels and θ_0. Wall time {minutes:.1f} min. "
             + "; ".join(DESCRIPTIONS.get(m, m) for m in methods) + ".")
    title = "a2lc demo: " + " vs ".join(method_label(m) for m in methods)
    report = write_report(root / "report", runs, title=title, notes=notes)
    return {"runs": runs, "report": str(report), "minutes": round(minutes, 2), "budget": cfgs[first].method.budget}


def demo_json(result: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object: for each method, rounds 0–N with round, data_miou, model_miou, budget_used."""
    keys = ("round", "data_miou", "model_miou", "budget_used")
    return {m: [{k: r.get(k) for k in keys} for r in run["rounds"]] for m, run in result["runs"].items()}
