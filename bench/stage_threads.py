"""CPU threads per stage: each stage of a default round with 1 and with 2 torch threads (issue 20).

    .venv/bin/python bench/stage_threads.py                 # built-in `city` benchmark, round 1
    .venv/bin/python bench/stage_threads.py --repeats 3 --train

Builds the default benchmark workspace (`a2lc init` defaults: built-in `city`, tiny
model), runs round 0 and round 1's acquire + query once, then times round 1's
non-training stages — acquire, lcm-train, lcm-correct, evaluate (Data mIoU, Model
mIoU, LCM accuracy: what `a2lc round` runs after training) — alternately with 1 and
2 threads (``torch.set_num_threads``), ``--repeats`` times; with ``--train`` also
round 1's training. Reports wall seconds and CPU seconds (user+sys of this process,
``resource.getrusage``) per stage, min and median, and the paired ratio 2 threads /
1 thread. Run it with OMP_NUM_THREADS unset. Prints a table and writes
bench/results/stage_threads-<date>.json. docs/performance.md has the policy chosen
from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from a2lc_cli import ui  # noqa: E402
from a2lc_cli.acquire import run_acquire  # noqa: E402
from a2lc_cli.config import Config  # noqa: E402
from a2lc_cli.lcm import run_lcm_correct, run_lcm_train  # noqa: E402
from a2lc_cli.pseudolabel import run_pseudolabel  # noqa: E402
from a2lc_cli.query import run_query  # noqa: E402
from a2lc_cli.rounds import evaluate_round  # noqa: E402
from a2lc_cli.training import train_round  # noqa: E402
from a2lc_cli.workspace import Workspace  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w0, _cpu() - c0


def default_round(ws: Workspace, cfg: Config) -> dict[str, list[float]]:
    """Wall and CPU seconds of each stage of ``run_round(r=1, force=True)`` (evaluation included), default threads."""
    from a2lc_cli.rounds import run_round

    marks: list[tuple[str, float, float]] = []

    def on_stage(r: int, stage: str, what: str) -> None:
        marks.append((stage, time.perf_counter(), _cpu()))

    run_round(ws, cfg, 1, force=True, evaluate=False, on_stage=on_stage)
    marks.append(("evaluate", time.perf_counter(), _cpu()))
    evaluate_round(ws, cfg, 1, lcm=True)  # what run_round does after the stages
    marks.append(("end", time.perf_counter(), _cpu()))
    out = {name: [round(w1 - w0, 2), round(c1 - c0, 2)] for (name, w0, c0), (_, w1, c1) in zip(marks, marks[1:])}
    rest = [v for k, v in out.items() if k != "train"]
    out["all but train"] = [round(sum(v[0] for v in rest), 2), round(sum(v[1] for v in rest), 2)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-compare", action="store_true", help="only the --round measurement")
    ap.add_argument("--train", action="store_true", help="also time round 1's training with 1 and 2 threads")
    ap.add_argument("--work", default=None)
    ap.add_argument("--lcm-epochs", type=int, default=3,
                    help="lcm-train epochs in the 1-vs-2-thread comparison (the default round's are timed by --round)")
    ap.add_argument("--round", action="store_true", help="also time a whole `round --r 1 --force` with the default policy")
    args = ap.parse_args(argv)
    ui.set_quiet(True)
    with tempfile.TemporaryDirectory(prefix="a2lc-threads-") as tmp:
        root = Path(args.work) if args.work else Path(tmp)
        ws = Workspace(root)
        root.mkdir(parents=True, exist_ok=True)
        if not ws.config_path.exists():
            ws.save_config(Config())
        cfg = ws.config()
        torch.set_num_threads(1)
        if not ws.dataset_path.exists():
            run_pseudolabel(ws.dataset_path, cfg)
        if not ws.artifact(0, "model.pt").exists():
            train_round(ws, cfg, 0)
        if not ws.artifact(1, "query.h5").exists():
            run_acquire(ws, cfg, 1)
            run_query(ws, cfg, 1)
        def with_threads(stage: str, n: int) -> Config:
            """The config with ``n`` threads for ``stage`` (the config wins over every default)."""
            c = cfg.model_copy(deep=True)
            c.lcm.epochs = args.lcm_epochs  # the comparison needs steps, not the whole schedule
            if stage == "train":
                c.train.threads = n
            else:
                setattr(c.threads, stage.replace("-", "_"), n)
            return c

        stages = {
            "acquire": lambda n: run_acquire(ws, with_threads("acquire", n), 1),
            "lcm-train": lambda n: run_lcm_train(ws, with_threads("lcm-train", n), 1),
            "lcm-correct": lambda n: run_lcm_correct(ws, with_threads("lcm-correct", n), 1),
            "evaluate": lambda n: (ws.save_config(with_threads("evaluate", n)),
                                   evaluate_round(ws, with_threads("evaluate", n), 1, lcm=True), ws.save_config(cfg)),
        }
        runs: dict[str, dict[int, list[tuple[float, float]]]] = {s: {1: [], 2: []} for s in stages}
        if args.train:
            runs["train"] = {1: [], 2: []}
        for _ in range(0 if args.skip_compare else args.repeats):
            for name, fn in stages.items():
                for n in (1, 2):
                    torch.set_num_threads(n)
                    runs[name][n].append(timed(lambda: fn(n)))
            if args.train:
                for n in (1, 2):
                    torch.set_num_threads(n)
                    runs["train"][n].append(timed(lambda: train_round(ws, with_threads("train", n), 1)))
        torch.set_num_threads(torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else os.cpu_count() or 1)
        round_stages = default_round(ws, cfg) if args.round else None
        rows, out = [], {}
        for name, by_n in runs.items():
            rec = {}
            for n, vals in by_n.items():
                walls, cpus = [v[0] for v in vals], [v[1] for v in vals]
                rec[n] = {"wall_min": round(min(walls), 3), "wall_median": round(statistics.median(walls), 3),
                          "cpu_min": round(min(cpus), 3), "cpu_median": round(statistics.median(cpus), 3),
                          "runs": [[round(w, 3), round(c, 3)] for w, c in vals]}
            if not by_n[1]:
                continue
            ratio = statistics.median([b[0] / a[0] for a, b in zip(by_n[1], by_n[2])])
            rec["wall_ratio_2_over_1"] = round(ratio, 2)
            out[name] = rec
            rows.append([name, rec[1]["wall_median"], rec[1]["cpu_median"], rec[2]["wall_median"], rec[2]["cpu_median"],
                         rec["wall_ratio_2_over_1"]])
        if round_stages:
            ui.out.print(ui.table("`a2lc round --r 1 --force` with the default thread policy (torch default: "
                                  f"{torch.get_num_threads()} threads)", ["stage", "wall s", "CPU s"],
                                  [[k, v[0], v[1]] for k, v in round_stages.items()]))
        ui.out.print(ui.table(f"round 1 stages of the default benchmark, {os.cpu_count()} CPUs (medians of {args.repeats})",
                              ["stage", "1 thread wall s", "1 thread CPU s", "2 threads wall s", "2 threads CPU s",
                               "wall 2/1 (paired)"], rows))
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = ROOT / "bench" / "results" / f"stage_threads-{stamp}.json"
        path.write_text(json.dumps({"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                                    "cpus": os.cpu_count(), "torch": torch.__version__, "command": " ".join(sys.argv),
                                    "loadavg": os.getloadavg(), "stages": out,
                                    "round": round_stages}, indent=1) + "\n")
        print(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
