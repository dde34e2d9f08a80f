"""Where `a2lc demo` spends its time: wall and CPU seconds per stage and per round (issue 14 item 6).

    .venv/bin/python bench/demo_breakdown.py                  # the default demo (built-in `city`, seed 0, 5 rounds)
    .venv/bin/python bench/demo_breakdown.py --rounds 1 --set train.iterations=300

Runs ``a2lc_cli.demo.run_demo`` in a fresh folder (a temporary one unless ``--out``), in
this process, with every stage entry point wrapped by a timer: pseudolabel, acquire,
query, lcm-train, lcm-correct, train, and each metric of the round's evaluation
(data-miou, model-miou, lcm-accuracy), plus the demo's own steps (round-0 sharing,
collecting the runs, writing the report). Each timer records wall seconds
(``time.perf_counter``) and CPU seconds (user+sys of this process and its waited-for
children, ``resource.getrusage``), so on a shared machine the CPU seconds are the
measure: on an idle machine with the demo's one-thread stages, wall ≈ CPU + the time
spent waiting for files (small here). Whatever is not inside a timer is reported as
``other`` (imports, config, rich output).

Prints a table per stage (summed over rounds and methods), per round, and per
(round, method, stage), with the Model/Data mIoU of every round, and writes
``bench/results/demo_breakdown-<date>.json``. ``--label`` names the run in the file
(e.g. ``before`` / ``after``). docs/performance.md has the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Timer:
    """Wall and CPU seconds per (round, method, stage); nested timers count only in the innermost."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.context = {"round": None, "method": None}
        self._stack: list[list[float]] = []  # per open timer: [child wall, child cpu]

    @contextmanager
    def stage(self, name: str, r=None):
        w0, c0 = time.perf_counter(), _cpu()
        self._stack.append([0.0, 0.0])
        try:
            yield
        finally:
            w, c = time.perf_counter() - w0, _cpu() - c0
            inner_w, inner_c = self._stack.pop()
            if self._stack:
                self._stack[-1][0] += w
                self._stack[-1][1] += c
            self.rows.append({"round": self.context["round"] if r is None else r, "method": self.context["method"],
                              "stage": name, "wall_s": round(w - inner_w, 3), "cpu_s": round(c - inner_c, 3)})


def _wrap(timer: Timer, module: str, attr: str, label, round_arg: int | None = None) -> None:
    mod = importlib.import_module(module)
    fn = getattr(mod, attr)

    @functools.wraps(fn)  # the same signature: the round driver passes only the options a run function takes
    def wrapped(*args, **kwargs):
        name = label(args, kwargs) if callable(label) else label
        r = args[round_arg] if round_arg is not None and len(args) > round_arg else kwargs.get("r")
        with timer.stage(name, r):
            return fn(*args, **kwargs)

    setattr(mod, attr, wrapped)


def instrument(timer: Timer) -> None:
    """Wrap the stage entry points where ``run_round`` / ``run_demo`` look them up at call time."""
    import a2lc_cli.demo as demo
    import a2lc_cli.rounds as rounds

    from a2lc_cli.stages import STAGES

    # every declared stage's run function, where the registry looks it up at call time
    # (`Stage.hook` resolves "module:function" on each call), so a new stage is timed too
    for stage in STAGES:
        module, fn = stage.run.split(":")
        _wrap(timer, "a2lc_cli" + module, fn, stage.name, 2)
    _wrap(timer, "a2lc_cli.evaluate", "run_metric", lambda a, k: "eval " + str(a[1]), 2)
    _wrap(timer, "a2lc_cli.demo", "share_round0", "share round 0")
    _wrap(timer, "a2lc_cli.demo", "collect_run", "collect runs")
    _wrap(timer, "a2lc_cli.demo", "write_report", "report")
    # the method of the round being run: run_demo calls run_round(ws, cfg, r) per method
    run_round = rounds.run_round

    def run_round_tagged(ws, cfg, r, **kwargs):
        timer.context.update(round=r, method=cfg.method.preset if r > 0 else "shared")
        try:
            return run_round(ws, cfg, r, **kwargs)
        finally:
            timer.context.update(round=None, method=None)

    demo.run_round = run_round_tagged


def idle_estimate(rows: list[dict], total_cpu: float, cores: int = 2) -> dict:
    """Wall seconds on an idle machine, from the CPU seconds (every stage runs one thread).

    One after the other: wall ≈ the total CPU seconds. Methods side by side (one per core,
    ``run_demo``'s default on ≥ 2 cores): round 0 and the report as they are, and per round
    the slower method's CPU seconds (with 2 methods on 2 cores), plus ≈ 4 CPU-s per method
    process for importing torch. Ignores what two processes cost each other (shared caches,
    memory bandwidth).
    """
    per: dict[tuple, float] = defaultdict(float)
    for x in rows:
        if x["round"] not in (None, 0) and x["method"] not in (None, "shared"):
            per[(x["round"], x["method"])] += x["cpu_s"]
    rounds = sorted({r for r, _ in per})
    methods = sorted({m for _, m in per})
    in_rounds = sum(per.values())
    slowest = sum(max(per[(r, m)] for m in methods) for r in rounds)
    side_by_side = total_cpu - in_rounds + slowest + 4.0 if len(methods) <= cores else None
    return {"sequential_wall_s": round(total_cpu, 1), "side_by_side_wall_s": None if side_by_side is None else round(side_by_side, 1),
            "rounds_cpu_s": round(in_rounds, 1), "rounds_slowest_method_cpu_s": round(slowest, 1)}


def summarise(rows: list[dict], total_wall: float, total_cpu: float) -> dict:
    by_stage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    by_round: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for x in rows:
        s = by_stage[x["stage"]]
        s[0] += x["wall_s"]
        s[1] += x["cpu_s"]
        s[2] += 1
        key = "-" if x["round"] is None else str(x["round"])
        by_round[key][0] += x["wall_s"]
        by_round[key][1] += x["cpu_s"]
    timed_w, timed_c = sum(v[0] for v in by_stage.values()), sum(v[1] for v in by_stage.values())
    by_stage["other"] = [total_wall - timed_w, total_cpu - timed_c, 1]
    return {
        "by_stage": {k: {"wall_s": round(v[0], 2), "cpu_s": round(v[1], 2), "calls": v[2]} for k, v in by_stage.items()},
        "by_round": {k: {"wall_s": round(v[0], 2), "cpu_s": round(v[1], 2)} for k, v in by_round.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="city")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--methods", default="a2lc,alc")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config option for both methods")
    ap.add_argument("--out", type=Path, help="demo folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--label", default="", help="name of this run in the JSON (e.g. before / after)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="methods at once (run_demo's jobs; default 1: one process, so every stage is timed)")
    args = ap.parse_args()

    t_import_w, t_import_c = time.perf_counter(), _cpu()
    import torch

    from a2lc_cli import ui
    from a2lc_cli.demo import parse_methods, run_demo
    from a2lc_cli.labelers.simulate import NOISE_VERSION

    import_w, import_c = time.perf_counter() - t_import_w, _cpu() - t_import_c
    timer = Timer()
    instrument(timer)
    options = dict(s.split("=", 1) for s in args.set)
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="a2lc-demo-bench-")
        out = Path(tmp.name)
    else:
        out = args.out
    w0, c0 = time.perf_counter(), _cpu()
    import inspect

    extra = {"jobs": args.jobs} if "jobs" in inspect.signature(run_demo).parameters else {}
    res = run_demo(out, preset=args.preset, seed=args.seed, rounds=args.rounds, options=options,
                   methods=parse_methods(args.methods), device="cpu", **extra)
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = summarise(timer.rows, wall, cpu)
    quality = {m: [{k: x.get(k) for k in ("round", "data_miou", "model_miou", "lcm_corrected")} for x in run["rounds"]]
               for m, run in res["runs"].items()}
    result = {
        "bench": "demo_breakdown", "label": args.label, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name] + sys.argv), "host": platform.node(), "cpus": os.cpu_count(),
        "load_average_end": os.getloadavg(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "benchmark_version": NOISE_VERSION,
        "preset": args.preset, "seed": args.seed, "rounds": args.rounds, "options": options,
        "budget": res["budget"], "total_wall_s": round(wall, 2), "total_cpu_s": round(cpu, 2),
        "import_wall_s": round(import_w, 2), "import_cpu_s": round(import_c, 2), "peak_rss_mb": round(peak_mb, 1),
        "jobs": args.jobs, **summary, "idle_2core_estimate": idle_estimate(timer.rows, cpu) if args.jobs == 1 else None,
        "rows": timer.rows, "quality": quality,
    }
    print_tables(result)
    dest = ROOT / "bench" / "results" / f"demo_breakdown-{args.label + '-' if args.label else ''}{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=1))
    print(f"wrote {dest}")
    if tmp is not None:
        tmp.cleanup()


def print_tables(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=180)
    total_c = max(res["total_cpu_s"], 1e-9)
    t = Table(title=f"a2lc demo by stage (v{res['benchmark_version']}, {res['preset']}, seed {res['seed']}, "
                    f"{res['rounds']} rounds): {res['total_wall_s']:.0f} s wall, {res['total_cpu_s']:.0f} CPU-s")
    for col in ("stage", "calls", "wall s", "CPU s", "CPU share"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for k, v in sorted(res["by_stage"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        t.add_row(k, str(v["calls"]), f"{v['wall_s']:.1f}", f"{v['cpu_s']:.1f}", f"{100 * v['cpu_s'] / total_c:.0f}%")
    con.print(t)
    t = Table(title="by round and method (wall s / CPU s)")
    stages = ["pseudolabel", "acquire", "query", "lcm-train", "lcm-correct", "train", "eval data-miou",
              "eval model-miou", "eval lcm-accuracy"]
    t.add_column("round")
    t.add_column("method")
    for s in stages:
        t.add_column(s.replace("eval ", ""), justify="right")
    t.add_column("Model mIoU", justify="right")
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for x in res["rows"]:
        if x["round"] is None:
            continue
        c = cells[(x["round"], x["method"])][x["stage"]]
        c[0] += x["wall_s"]
        c[1] += x["cpu_s"]
    miou = {(q["round"], m if q["round"] else "shared"): q.get("model_miou") for m, qs in res["quality"].items() for q in qs}
    for (r, m), per in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        mi = miou.get((r, m))
        t.add_row(str(r), str(m), *[f"{per[s][0]:.1f}/{per[s][1]:.1f}" if s in per else "" for s in stages],
                  "" if mi is None else f"{mi:.2f}")
    con.print(t)
    est = res.get("idle_2core_estimate")
    if est:
        con.print(f"idle 2-core machine, estimated from CPU seconds: one method after the other ≈ {est['sequential_wall_s']:.0f} s; "
                  f"methods side by side (run_demo's default) ≈ {est['side_by_side_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
