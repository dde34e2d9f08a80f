"""``a2lc demo``: A²LC against the ALC baseline on the built-in benchmark, same data, same θ_0, same budget.

One workspace per method under the demo folder (``a2lc/`` and ``alc/`` by
default; ``--methods a2lc,alc,a2lc+`` adds A²LC with the calibrated LCM) share
round 0 (the pseudo-labels and θ_0 are computed once and copied), then run their
rounds side by side. A report with the paper-style table and plots is written
to ``report/``. Rerunning the demo continues where it stopped.
"""

from __future__ import annotations

import os
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


def demo_jobs(methods: tuple[str, ...], device: str | None, jobs: int | None = None) -> int:
    """How many methods run their rounds at once: one per CPU core on the CPU, one on a GPU.

    The methods share nothing after round 0 and every stage of the default model runs
    one CPU thread, so on a 2-core machine A²LC and ALC run side by side in two
    processes (the results are the same as one after the other). ``jobs`` overrides.
    """
    if jobs is not None:
        return max(1, min(int(jobs), len(methods)))
    if device is not None and not str(device).startswith("cpu"):
        return 1
    if device is None:
        import torch

        if torch.cuda.is_available():
            return 1
    return max(1, min(len(methods), os.cpu_count() or 1))


def _method_rounds(root: str, method: str, rounds: int, device: str | None, threads: int, queue) -> None:
    """(child process) Rounds 1..``rounds`` of one method's workspace; each round's metrics, or the
    error, go to ``queue`` as (method, round, metrics | None, error | None)."""
    ui.set_quiet(True)
    try:
        import torch

        torch.set_num_threads(threads)  # stages that set their own count (the tiny model: 1) still do
        ws = Workspace(Path(root) / method)
        cfg = ws.config()
        for r in range(1, rounds + 1):
            with ws.lock("a2lc demo"):
                res = run_round(ws, cfg, r, device=device)
            queue.put((method, r, res["metrics"], None))
    except BaseException as e:  # noqa: BLE001 - reported by the parent as a one-line error
        queue.put((method, -1, None, str(e) if isinstance(e, A2LCError) else f"{type(e).__name__}: {e}"))


def _rounds_side_by_side(root: Path, methods: tuple[str, ...], rounds: int, device: str | None,
                         jobs: int) -> dict[int, dict[str, dict]]:
    """Run rounds 1..N of every method, ``jobs`` methods at a time, each in its own process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh interpreter: no torch/OpenMP state inherited from this one
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    import queue as queue_mod

    pending, running, results = list(methods), {}, {}
    try:
        with ui.ProgressBar(f"rounds 1–{rounds}: {', '.join(method_label(m) for m in methods)} side by side",
                            total=rounds * len(methods)) as bar:
            while pending or running:
                while pending and len(running) < jobs:
                    m = pending.pop(0)
                    running[m] = ctx.Process(target=_method_rounds, args=(str(root), m, rounds, device, threads, queue))
                    running[m].start()
                try:
                    m, r, metrics, error = queue.get(timeout=2)
                except queue_mod.Empty:
                    dead = [x for x, p in running.items() if not p.is_alive()]
                    if dead:  # killed without a word (e.g. out of memory)
                        raise A2LCError(f"{method_label(dead[0])}: its process ended with exit code "
                                        f"{running[dead[0]].exitcode} before round {rounds}") from None
                    continue
                if error is not None:
                    raise A2LCError(f"{method_label(m)}: {error}")
                results.setdefault(r, {})[m] = metrics
                bar.advance()
                if len(results[r]) == len(methods):
                    ui.info(f"round {r}: " + " | ".join(_metrics_line(x, results[r][x]) for x in methods))
                if r == rounds:
                    running.pop(m).join()
    finally:
        for p in running.values():  # an error or Ctrl-C: stop the others (their finished rounds are kept)
            p.terminate()
            p.join()
    return results


def refuse_older_benchmark(root: Path, spaces: dict[str, Workspace]) -> None:
    """A2LCError when a method's folder under the demo folder ``root`` holds a dataset of an older built-in
    benchmark (its rounds would continue that benchmark under this version's name). Nothing is written."""
    from .labelers.benchmark_version import NOISE_VERSION, outdated_benchmark
    from .state import Dataset

    for m, ws in spaces.items():
        if not ws.dataset_path.exists():
            continue
        with Dataset(ws.dataset_path) as ds:
            old = outdated_benchmark(ds.meta)
        if old is not None:
            raise A2LCError(f"{root} holds a demo of built-in benchmark v{old} ({m}/{ws.dataset_path.name}); this a2lc "
                            f"runs v{NOISE_VERSION}: run the demo in a new folder (a2lc -w NEW_FOLDER demo) or delete {root}")


def _metrics_line(method: str, met: dict) -> str:
    return f"{method_label(method)} data {met.get('data_miou', float('nan')):.2f} / model {met.get('model_miou', float('nan')):.2f}"


def run_demo(root: Path, *, preset: str = "city", seed: int = 0, rounds: int = 5, budget: int | None = None,
             device: str | None = None, options: dict[str, str] | None = None,
             methods: tuple[str, ...] = METHODS, jobs: int | None = None) -> dict[str, Any]:
    """Run the methods (default A²LC and ALC) for ``rounds`` rounds; return per-method per-round results and the report path.

    jobs: methods run at once in separate processes (default :func:`demo_jobs`: one per CPU
    core on the CPU, 1 on a GPU; 1 runs them one after the other in this process).
    """
    root = Path(root)
    methods = tuple(methods)
    spaces = {m: Workspace(root / m) for m in methods}
    cfgs = {m: demo_config(preset=preset, seed=seed, method=m, budget=budget, rounds=rounds, options=options)
            for m in methods}
    t0 = time.perf_counter()
    first = methods[0]
    refuse_older_benchmark(root, spaces)
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
    n_jobs = demo_jobs(methods, device, jobs)
    if n_jobs > 1 and rounds > 0:
        _rounds_side_by_side(root, methods, rounds, device, n_jobs)
    for r in range(1, rounds + 1 if n_jobs == 1 else 1):
        line = []
        for m in methods:
            with spaces[m].lock("a2lc demo"):
                ui.info(f"[bold]round {r}[/]: {method_label(m)}")
                res = run_round(spaces[m], cfgs[m], r, device=device)
            line.append(_metrics_line(m, res["metrics"]))
        ui.info(f"round {r}: " + " | ".join(line))
    runs = {m: collect_run(spaces[m]) for m in methods}
    minutes = (time.perf_counter() - t0) / 60
    notes = (f"Built-in `{preset}` benchmark v{NOISE_VERSION}, seed {seed}, {rounds} rounds, budget {cfgs[first].method.budget} masks per "
             f"round for every method; same pseudo-labels and θ_0. Wall time {minutes:.1f} min. "
             + "; ".join(DESCRIPTIONS.get(m, m) for m in methods) + ".")
    title = "a2lc demo: " + " vs ".join(method_label(m) for m in methods)
    report = write_report(root / "report", runs, title=title, notes=notes)
    return {"runs": runs, "report": str(report), "minutes": round(minutes, 2), "budget": cfgs[first].method.budget,
            "benchmark": {"preset": preset, "version": NOISE_VERSION}}


def benchmark_name(result: dict[str, Any]) -> str:
    """``built-in city benchmark v3``: what the demo ran on (its table title names it)."""
    b = result["benchmark"]
    return f"built-in {b['preset']} benchmark v{b['version']}"


def demo_json(result: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object: ``benchmark`` ({preset, version}: the built-in benchmark's version,
    docs/benchmark.md) and, for each method, rounds 0–N with round, data_miou, model_miou, budget_used and
    lcm_corrected (None in round 0 and for a method without LCM)."""
    keys = ("round", "data_miou", "model_miou", "budget_used", "lcm_corrected")
    return {"benchmark": dict(result["benchmark"]),
            **{m: [{k: r.get(k) for k in keys} for r in run["rounds"]] for m, run in result["runs"].items()}}
