"""Does the calibrated LCM's precision estimate hold for the never-queried masks? (needs ground truth)

    .venv/bin/python bench/lcm_shift_check.py bench/work/quality-v3/city-s0/a2lc+ [--rounds 1 2 3 4 5]

For each round of a finished ``a2lc+`` workspace and each confidence threshold t of a fixed grid
(pooled over classes), it compares three numbers for ψ's situations of a correction with
confidence ≥ t (ψ's class ≠ the label, the segmentation model agrees):

* ``measured``: among the never-queried masks, the share where ψ's class is the ground-truth majority
  (what a correction at t would achieve; masks with void truth left out);
* ``plain``: the hit rate among the answered masks' out-of-fold situations, unweighted (the estimate
  before the selection-bias correction) and its 95% Wilson lower bound;
* ``overlap``/``measured``: the never-queried situations inside the overlap (density ratio ≤
  ``lcm.max_density_ratio``; the only ones the selection may correct) and their measured share;
* ``weighted``: the answered hit rate with the propensity weights toward the overlap
  (docs/lcm-calibrated.md), its bound at Kish's n_eff. It should be ≤ the overlap's measured share.

A bound that holds is ≤ measured. The thresholds are a fixed grid, not the chosen ones, so the check
does not depend on what the selection chose. Saves JSON under ``bench/results/lcm_shift_check-<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a2lc_cli.acquire import mask_features, read_acquisition  # noqa: E402
from a2lc_cli.config import load_config  # noqa: E402
from a2lc_cli.lcm import load_lcm, predict_confidence  # noqa: E402
from a2lc_cli.lcm_calibrated import answered_situations, calibration_arrays, shift_weights  # noqa: E402
from a2lc_cli.lcm_calibration import wilson_lower_bound  # noqa: E402
from a2lc_cli.lcm_shift import effective_size  # noqa: E402
from a2lc_cli.state import Dataset, mask_state  # noqa: E402
from a2lc_cli.workspace import Workspace  # noqa: E402

GRID = (0.5, 0.7, 0.9, 0.97, 0.99, 0.999)


def check_round(ws: Workspace, r: int) -> list[dict]:
    cfg = load_config(ws.root / "config.json")
    model, ckpt = load_lcm(ws.artifact(r, "lcm.pt"))
    a = calibration_arrays(ckpt, ws.artifact(r, "lcm.pt"))
    acq = read_acquisition(ws.artifact(r, "acquire.h5"))
    pred, logc = predict_confidence(model, mask_features(acq))
    with Dataset(ws.dataset_path) as ds:
        state = mask_state(ws.root, ds, r, include_lcm_of_last=False)
        gt = ds.mask_column("gt_label").astype(np.int64)
        area = np.asarray(ds.mask_area, np.float64)
        c = ds.num_classes
    model_pred = np.asarray(acq["dominant"], np.int64)
    never = ~state.queried & (pred != state.label)
    if cfg.lcm.require_model_agreement:
        never &= pred == model_pred
    w, inside = shift_weights(cfg.model_copy(update={"lcm": cfg.lcm.model_copy(update={"reweight": "propensity"})}), a,
                              {"pred": pred[never], "log_confidence": logc[never], "label": state.label[never],
                               "prob": acq["mean_prob"][never], "area": area[never]}, area, c)
    overlap = np.zeros(len(pred), bool)
    overlap[np.flatnonzero(never)[inside]] = True
    sit = answered_situations(a, cfg.lcm.require_model_agreement)
    hit = (a["pred"] == a["answer"])[sit]
    lc_a, w_a = a["log_confidence"][sit], w[sit]
    valid = never & (gt != 255)
    rows = []
    for t in GRID:
        m = valid & (logc >= np.log(t))
        mo = m & overlap
        s = lc_a >= np.log(t)
        n, k = int(s.sum()), int(hit[s].sum())
        n_eff = effective_size(w_a[s])
        pw = float((w_a[s] * hit[s]).sum() / w_a[s].sum()) if w_a[s].sum() > 0 else float("nan")
        rows.append({"round": r, "threshold": t, "never_n": int(m.sum()),
                     "measured": float(np.mean(pred[m] == gt[m])) if m.any() else None,
                     "overlap_n": int(mo.sum()),
                     "measured_overlap": float(np.mean(pred[mo] == gt[mo])) if mo.any() else None,
                     "answered_n": n, "plain": k / n if n else None,
                     "plain_bound": float(wilson_lower_bound(k, n)) if n else None,
                     "n_eff": round(n_eff, 2), "weighted": pw if n else None,
                     "weighted_bound": float(wilson_lower_bound(pw * n_eff, n_eff)) if n else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--rounds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    args = ap.parse_args(argv)
    ws = Workspace(args.workspace)
    rows = []
    f = lambda v: "   -" if v is None or v != v else f"{100 * v:5.1f}"  # noqa: E731
    print("round   t      never  measured | answered  plain  bound | overlap measured | n_eff  weighted  bound")
    for r in args.rounds:
        if not ws.artifact(r, "lcm.pt").exists():
            continue
        for row in check_round(ws, r):
            rows.append(row)
            print(f"{r:5d} {row['threshold']:6.3f} {row['never_n']:7d}  {f(row['measured'])}   | {row['answered_n']:7d}"
                  f"  {f(row['plain'])}  {f(row['plain_bound'])} | {row['overlap_n']:7d}  {f(row['measured_overlap'])}"
                  f"   | {row['n_eff']:6.1f}  {f(row['weighted'])}"
                  f"  {f(row['weighted_bound'])}")
    name = "-".join(args.workspace.resolve().parts[-2:])
    out = ROOT / "bench" / "results" / f"lcm_shift_check-{name}.json"
    out.write_text(json.dumps({"workspace": str(args.workspace), "rows": rows}, indent=1) + "\n")
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
