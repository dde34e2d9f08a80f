"""bench/quality_report.py's goal verdicts (issue 18 review): the accuracy goal of the calibrated
corrections is judged only on the seeds that corrected, and the line says how many made none."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from quality_report import beyond_goals  # noqa: E402


def _run(seed: int, corrected: int, right: int = 0, bound: float = 0.9, est: float = 0.95) -> dict:
    m = {"corrected": corrected, "void_gt": 0, "correct_after": right, "estimated_precision": est if corrected else None,
         "precision_bound": bound if corrected else None}
    return {"seed": seed, "lcm": [None, m], "rounds": [{"data_miou": 50.0}, {"data_miou": 60.0}]}


def test_the_accuracy_verdict_counts_only_seeds_with_corrections():
    runs = {("city", "a2lc+"): [_run(0, 0), _run(1, 0), _run(2, 63, 62)]}
    line = next(x for x in beyond_goals(runs) if x.startswith("- `city`: accuracy"))
    assert "**met** (tested on 1 seed with corrections: 2; 2 seeds (0, 1) made none, not tested)" in line
    assert "seeds 0, 1, 2" not in line


def test_no_corrections_anywhere_is_vacuous_and_a_miss_is_not_met():
    runs = {("city", "a2lc+"): [_run(0, 0), _run(1, 0)]}
    assert "**vacuous: no corrections** (seeds 0, 1)" in next(x for x in beyond_goals(runs) if "accuracy of" in x)
    runs = {("city", "a2lc+"): [_run(0, 10, 8), _run(1, 10, 10), _run(2, 0)]}
    line = next(x for x in beyond_goals(runs) if "accuracy of" in x)
    assert "**not met** (tested on 2 seeds with corrections: 0, 1; 1 seed (2) made none, not tested)" in line
