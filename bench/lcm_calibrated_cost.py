"""CPU cost of the calibrated LCM stages (lcm-train + lcm-correct) per round, two settings paired.

    .venv/bin/python bench/lcm_calibrated_cost.py bench/work/quality-v3/city-s0/a2lc+ --rounds 1 3 5 --reps 3

On a copy of a finished ``a2lc+`` workspace, reruns round r's ``lcm-train`` and ``lcm-correct`` under
each setting, alternately (A B A B ...), and reports CPU seconds (``time.process_time``, one thread:
set OMP_NUM_THREADS=1) per round, min and median over the repetitions, and the ratio B/A of the
medians. Settings: ``plain`` = ``lcm.evidence_features=current, lcm.reweight=none`` (the selection
before the selection-bias correction) and ``shift`` = the defaults (query-time features, propensity
weights). Saves JSON under ``bench/results/lcm_calibrated_cost-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a2lc_cli import ui  # noqa: E402
from a2lc_cli.config import load_config  # noqa: E402
from a2lc_cli.lcm import run_lcm_correct, run_lcm_train  # noqa: E402
from a2lc_cli.workspace import Workspace  # noqa: E402

SETTINGS = {"plain": {"evidence_features": "current", "reweight": "none"}, "shift": {}}


def stage_seconds(ws: Workspace, r: int, overrides: dict) -> tuple[float, float]:
    cfg = load_config(ws.root / "config.json")
    for k, v in overrides.items():
        setattr(cfg.lcm, k, v)
    t0 = time.process_time()
    run_lcm_train(ws, cfg, r)
    t1 = time.process_time()
    run_lcm_correct(ws, cfg, r)
    return t1 - t0, time.process_time() - t1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--rounds", nargs="+", type=int, default=[1, 3, 5])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    ui.set_quiet(True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        shutil.copytree(args.workspace, ws.root, ignore=shutil.ignore_patterns(".lock"))
        for r in args.rounds:
            times = {name: {"train": [], "correct": []} for name in SETTINGS}
            for _ in range(args.reps):
                for name, ov in SETTINGS.items():
                    tr, co = stage_seconds(ws, r, ov)
                    times[name]["train"].append(tr)
                    times[name]["correct"].append(co)
            row = {"round": r}
            for name in SETTINGS:
                tot = [a + b for a, b in zip(times[name]["train"], times[name]["correct"])]
                row[name] = {"train": times[name]["train"], "correct": times[name]["correct"],
                             "min": min(tot), "median": statistics.median(tot)}
            row["ratio_median"] = row["shift"]["median"] / row["plain"]["median"]
            rows.append(row)
            print(f"round {r}: plain min {row['plain']['min']:.2f} / median {row['plain']['median']:.2f} cpu-s, "
                  f"shift min {row['shift']['min']:.2f} / median {row['shift']['median']:.2f} cpu-s, "
                  f"ratio {row['ratio_median']:.3f}", flush=True)
    out = ROOT / "bench" / "results" / f"lcm_calibrated_cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"workspace": str(args.workspace), "machine": f"{platform.node()}",
                               "rows": rows}, indent=1) + "\n")
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
