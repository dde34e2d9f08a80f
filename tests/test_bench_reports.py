"""The benchmark's report scripts (bench/calibration.py, bench/quality_report.py): hand-computed
aggregates, the criterion per seed, and one-line refusals of bad options."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _run(*rounds: tuple[int, int, int, int], seed: int = 0, masks: int | None = None) -> dict:
    """A saved run whose rounds corrected (corrected, void_gt, right before, right after) masks."""
    lcm = [{"corrected": c, "void_gt": v, "correct_before": b, "correct_after": a} for c, v, b, a in rounds]
    run = {"seed": seed, "lcm": lcm, "rounds": [{"data_miou": 50.0, "model_miou": 40.0, "budget_used": 0}] * 6}
    if masks is not None:
        run["errors"] = {"masks": masks}
    return run


def test_lcm_accuracy_is_pooled_over_masks_not_averaged_over_seeds():
    q = _load("quality_report")
    # seed 0: 10 masks, 8 right before, 2 after; seed 1: 100 + 5 void-GT masks over two rounds,
    # 10 right before, 60 after. Pooled: 18 / 110 before, 62 / 110 after (per-seed mean: 45% → 35%)
    runs = [_run((10, 0, 8, 2)), _run((40, 5, 4, 30), (65, 0, 6, 30), seed=1)]
    before, after, masks = q.pooled_accuracy(runs)
    assert masks == 110
    assert before == pytest.approx(100 * 18 / 110) and after == pytest.approx(100 * 62 / 110)
    assert q.pooled_accuracy([_run((3, 3, 0, 0))]) is None  # only void-GT masks: no accuracy
    rows = q.table3({("city", "a2lc"): runs})
    assert f"| {100 * 18 / 110:.2f} | {100 * 62 / 110:.2f} |" in rows[2]


def test_configurations_without_runs_stay_as_rows_of_dashes():
    q = _load("quality_report")
    runs = {("city", "a2lc"): [_run((1, 0, 0, 1))]}
    rows = q.switch_table(runs)
    names = [name for cfg, name in q.SWITCHES]
    for p in q.PRESETS:
        for cfg, name in q.SWITCHES:
            shown = [r for r in rows if r.startswith(f"| {p} | {name} |")]
            if q.SWITCH_ONLY.get(cfg, p) != p:
                assert not shown  # a switch of the other preset only
            else:
                assert len(shown) == 1
    assert sum("| — | — | — | — |" in r for r in rows) == len(rows) - 3  # header, rule, the one run
    assert len(names) == len(set(names))
    assert sum(r.endswith("| — | — | — | — |") for r in q.table3(runs)) >= len(q.LCM_CONFIGS) - 1


def test_setup_mask_counts_come_from_the_runs():
    q = _load("quality_report")
    assert q.mask_count([_run(seed=0, masks=2923), _run(seed=1, masks=3086)]) == "2,923–3,086"
    assert q.mask_count([_run(masks=10_512), _run(masks=10_488)]) == "≈10.5k"
    assert q.mask_count([]) == "? "


def test_calibration_criterion_per_seed_and_systematic_misses():
    cal = _load("calibration")
    real = cal.REAL_IOU["city"]
    names = tuple(f"c{k}" for k in range(len(real)))
    # seed 0 equal to the real row; seed 1 with c0 +6 and c1 −7; seed 2 with c0 +8
    runs = [{"seed": s, "per_class_iou": list(real), "miou": cal.REAL_MIOU["city"]} for s in range(3)]
    runs[1]["per_class_iou"][0] += 6
    runs[1]["per_class_iou"][1] -= 7
    runs[2]["per_class_iou"][0] += 8
    runs[2]["miou"] += 2.5
    seeds = cal.per_seed_iou("city", runs, names)
    assert [s["iou_within_5"] for s in seeds] == [19, 17, 18]
    assert seeds[1]["misses"] == {"c0": 6.0, "c1": -7.0} and [s["miou_within_2"] for s in seeds] == [True, True, False]
    assert cal.systematic_misses(seeds) == {"c0": [6.0, 8.0]}  # c1 misses in 1 of 3 seeds only


def test_calibration_counts_no_masks_as_not_applicable():
    cal = _load("calibration")
    out = cal.round0_statistics("city", 0, n_train=1)
    confusions = out["class_confusions"]
    for stats in confusions.values():
        assert (stats["wrong"] is None) == (stats["masks"] == 0)
    assert any(stats["masks"] == 0 for stats in confusions.values())  # one image lacks some of these classes


@pytest.mark.parametrize("args, message", [(["--n-train", "0"], "--n-train must be at least 1"),
                                           (["--seeds", "-1"], "--seeds must be non-negative")])
def test_calibration_refuses_bad_options_in_one_line(args, message, tmp_path):
    res = subprocess.run([sys.executable, str(BENCH / "calibration.py"), *args, "--out", str(tmp_path / "c.json")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error:") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "c.json").exists()
