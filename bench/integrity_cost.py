"""What the on-open integrity checks (a2lc_cli/integrity.py, issue 15) cost when a command opens the built-in dataset.

    .venv/bin/python bench/integrity_cost.py --baseline /tmp/a2lc-before   # a2lc_cli of the commit before the checks
    .venv/bin/python bench/integrity_cost.py --baseline DIR --workspace WS  # an existing workspace (else built here)

``--baseline DIR``: a folder holding the ``a2lc_cli`` package without the checks, e.g.
``git archive 79a5d61 a2lc_cli | tar -x -C /tmp/a2lc-before``. Each measurement runs in a
fresh process with that package or this tree's first on ``sys.path``, alternating (B, A, B, A, ...),
and times ``Dataset(path)`` + reading every mask-table column + ``close()`` — what a command does
with ``dataset.h5`` before its per-image work — ``--opens`` times in a process (the first open, with
cold imports, is reported separately), and one pass reading every image's segment and label0 maps
(the per-image checks, as train/acquire/evaluate read them; best of 3). Also times ``a2lc status --json`` end to end (the checks of
every round artifact included) and ``status --verify`` (every per-pixel map). Prints min/median
and the ratio new/old, writes bench/results/integrity_cost-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from a2lc_cli.state import Dataset
cols = ("image", "area", "bbox", "label0", "score", "prompt", "gt_label", "gt_purity")
times = []
for k in range(int(sys.argv[2])):
    t = time.perf_counter()
    ds = Dataset(sys.argv[1])
    for c in cols:
        if c in ("gt_label", "gt_purity") and not ds.has_gt:
            continue
        ds.mask_column(c)
    ds.close()
    times.append(time.perf_counter() - t)
pixels = []
for k in range(3):  # every image's maps as train/acquire/evaluate read them (per-image checks included)
    ds = Dataset(sys.argv[1])
    t = time.perf_counter()
    for i in range(ds.n_images):
        ds.segment(i), ds.label0(i)
    pixels.append(time.perf_counter() - t)
    ds.close()
print(json.dumps({"first": times[0], "rest": times[1:], "pixels": min(pixels)}))
"""


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}


def _opens(src: Path, path: Path, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n)], env=_env(src), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def _command(src: Path, ws: Path, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "a2lc_cli", "-q", "-w", str(ws), *args], env=_env(src), check=True,
                   capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="folder holding the a2lc_cli package before the checks")
    ap.add_argument("--workspace", type=Path, default=None, help="workspace with dataset.h5 (default: build the built-in one)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--opens", type=int, default=20)
    a = ap.parse_args()
    ws = a.workspace or Path("/tmp/a2lc-integrity-bench")
    if not (ws / "dataset.h5").exists():
        for args in (("init",), ("pseudolabel",)):
            subprocess.run([sys.executable, "-m", "a2lc_cli", "-q", "-w", str(ws), *args], env=_env(HERE), check=True)
    ds = ws / "dataset.h5"
    runs = {"old": {"first": [], "open": [], "pixels": [], "status": []},
            "new": {"first": [], "open": [], "pixels": [], "status": [], "verify": []}}
    for _ in range(a.repeats):
        for name, src in (("old", a.baseline), ("new", HERE)):
            r = _opens(src, ds, a.opens)
            runs[name]["first"].append(r["first"])
            runs[name]["open"].append(min(r["rest"]))
            runs[name]["pixels"].append(r["pixels"])
            runs[name]["status"].append(_command(src, ws, "status", "--json"))
        runs["new"]["verify"].append(_command(HERE, ws, "status", "--json", "--verify"))

    def stat(xs: list[float]) -> dict:
        return {"min_ms": 1e3 * min(xs), "median_ms": 1e3 * statistics.median(xs)}

    table = {k: {name: stat(v[k]) for name, v in runs.items() if k in v} for k in ("first", "open", "pixels", "status", "verify")}
    print(f"{'measure':<28}{'old min/med ms':>20}{'new min/med ms':>20}{'ratio min/med':>16}")
    for k, row in table.items():
        new = row["new"]
        old = row.get("old")
        if old:
            ratio = f"{new['min_ms'] / old['min_ms']:.2f}/{new['median_ms'] / old['median_ms']:.2f}"
            olds = f"{old['min_ms']:.1f}/{old['median_ms']:.1f}"
        else:
            ratio, olds = "-", "-"
        label = {"first": "first open (cold imports)", "open": "open + mask table (warm)",
                 "pixels": "read every segment+label0",
                 "status": "a2lc status --json", "verify": "a2lc status --verify"}[k]
        news = f"{new['min_ms']:.1f}/{new['median_ms']:.1f}"
        print(f"{label:<28}{olds:>20}{news:>20}{ratio:>16}")
    out = HERE / "bench" / "results" / f"integrity_cost-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"workspace": str(ws), "repeats": a.repeats, "opens": a.opens, "table": table,
                               "raw": runs}, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
