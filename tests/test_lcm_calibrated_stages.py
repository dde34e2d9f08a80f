"""The calibrated LCM selection through the CLI (preset a2lc+) on tiny built-in data: what lcm.h5, `evaluate
--metric lcm-accuracy --json`, `status` and the report record, and that every correction obeys the recorded
thresholds; the paper's and the calibrated checkpoints are not mixed up."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from a2lc_cli.acquire import read_acquisition
from a2lc_cli.lcm import load_lcm
from a2lc_cli.state import Dataset, mask_state, read_corrections, read_query

pytestmark = pytest.mark.slow

# loose settings so that tiny data gives corrections: the point here is the bookkeeping, not the precision
LOOSE = ["--set", "lcm.target_precision=0.3", "--set", "lcm.min_class_evidence=4", "--set", "lcm.min_class_answers=2",
         "--set", "lcm.folds=3", "--set", "lcm.epochs=30"]


def ok(cli, *args):
    code, out, err = cli(*args)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def plus_ws(tmp_path_factory):
    from a2lc_cli.cli import invoke

    ws = tmp_path_factory.mktemp("plus") / "ws"
    assert invoke(["-q", "-w", str(ws), "init", "--method", "a2lc+", "--n-train", "16", "--n-val", "4", "--height", "48",
                   "--width", "96", "--set", "train.iterations=20", "--set", "method.budget=60", *LOOSE]) == 0
    for r in (0, 1, 2):
        assert invoke(["-q", "-w", str(ws), "round", "--r", str(r)]) == 0
    return ws


def test_lcm_h5_records_thresholds_and_corrections_obey_them(plus_ws):
    ws = plus_ws
    ckpt = load_lcm(ws / "rounds/r002/lcm.pt")[1]
    assert ckpt["selection"] == "calibrated"
    cal = {k: v.numpy() for k, v in ckpt["calibration"].items()}
    q1, q2 = read_query(ws / "rounds/r001/query.h5"), read_query(ws / "rounds/r002/query.h5")
    answered = np.concatenate([q.answers.effective()[0][q.answers.effective()[1] != 255] for q in (q1, q2)])
    np.testing.assert_array_equal(np.sort(cal["mask"]), np.sort(answered))  # ψ_2 learnt from both rounds (a2lc+)
    with Dataset(ws / "dataset.h5") as ds:
        before2 = mask_state(ws, ds, 1).label
        st = mask_state(ws, ds, 2, include_lcm_of_last=False)
    in2 = np.isin(cal["mask"], q2.selected)
    np.testing.assert_array_equal(cal["previous"][in2], before2[cal["mask"][in2]])  # label before the answer
    # query-time view (lcm.evidence_features): round 1's answers as round 1's acquisition saw them
    in1 = ~in2
    acq1 = read_acquisition(ws / "rounds/r001/acquire.h5")
    np.testing.assert_array_equal(cal["model_pred"][in1], acq1["dominant"][cal["mask"][in1]])
    np.testing.assert_allclose(cal["prob"][in1], acq1["mean_prob"][cal["mask"][in1]])
    np.testing.assert_array_equal(cal["round"], np.where(in2, 2, 1))
    c = read_corrections(ws / "rounds/r002/lcm.h5")
    with h5py.File(ws / "rounds/r002/lcm.h5") as f:
        g = {k: v[()] for k, v in f["calibration"].items()}
        logc = f["log_confidence"][()]
    dominant = read_acquisition(ws / "rounds/r002/acquire.h5")["dominant"]
    assert g["log_threshold"].shape == (19,) and g["corrected"].sum() == len(c.mask)
    np.testing.assert_array_equal(g["corrected"], np.bincount(c.label, minlength=19))
    assert (logc[c.mask] >= g["log_threshold"][c.label]).all()  # every correction reaches its class's threshold
    assert not st.queried[c.mask].any() and (c.label != c.previous).all()
    assert (dominant[c.mask] == c.label).all()  # and the segmentation model agrees with ψ
    with_threshold = np.isfinite(g["log_threshold"])
    assert (g["bound"][with_threshold] >= 0.3).all()
    assert (g["answers"][with_threshold] >= 2).all()
    meta = c.attrs["meta"]
    assert meta["selection"] == "calibrated" and meta["target_precision"] == 0.3 and meta["corrected"] == len(c.mask)
    assert meta["reweight"] == "propensity" and meta["max_density_ratio"] == 9.0 and meta["outside_overlap"] >= 0
    assert (g["effective"][with_threshold] <= g["support"][with_threshold] + 1e-9).all()  # n_eff ≤ the count


def test_evaluate_status_and_report_show_the_estimate(plus_ws, cli, tmp_path):
    ws = plus_ws
    acc = json.loads(ok(cli, "-q", "-w", ws, "evaluate", "--metric", "lcm-accuracy", "--r", "2", "--json"))
    c = read_corrections(ws / "rounds/r002/lcm.h5")
    assert acc["selection"] == "calibrated" and acc["corrected"] == len(c.mask)
    assert acc["target_precision"] == 0.3
    for name, row in acc["by_class"].items():
        assert set(row) >= {"threshold", "source", "estimated_precision", "precision_bound", "corrected", "accuracy_after"}
        if row["threshold"] is not None:
            assert row["precision_bound"] >= 0.3 and row["source"] in ("own", "pooled")
    with Dataset(ws / "dataset.h5") as ds:
        gt = ds.mask_column("gt_label")[c.mask]
        names = ds.classes.names
    for name, row in acc["by_class"].items():  # measured accuracy per class from the ground truth
        sel = (c.label == names.index(name)) & (gt != 255)
        want = None if not sel.any() else round(100 * float(np.mean(c.label[sel] == gt[sel])), 4)
        assert row["accuracy_after"] == want
    if len(c.mask):
        assert acc["precision_bound"] is not None and 0.3 <= acc["precision_bound"] <= acc["estimated_precision"] <= 1
    st = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert st["rounds"][2]["lcm"]["selection"] == "calibrated"
    assert st["lcm"]["corrected"] == sum(st["rounds"][k]["lcm"]["corrected"] for k in (1, 2))
    code, out, _ = cli("-w", ws, "status")
    assert code == 0 and "LCM: " in out
    if st["lcm"]["corrected"]:
        assert "estimated precision ≥" in " ".join(out.split())
    ok(cli, "-q", "-w", ws, "report", "--out", tmp_path / "rep")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "LCM: " in report and "| calibrated |" in report


def test_paper_and_calibrated_checkpoints_are_not_mixed_up(plus_ws, cli, tmp_path):
    import shutil

    ws = tmp_path / "copy"
    shutil.copytree(plus_ws, ws)
    ok(cli, "-q", "-w", ws, "config", "set", "lcm.selection=paper")
    code, _, err = cli("-q", "-w", ws, "lcm-correct", "--r", "2")
    assert code != 0 and err.startswith("error:") and "calibrated selection" in err and "lcm-train" in err
    ok(cli, "-q", "-w", ws, "lcm-train", "--r", "2")  # ψ retrained for the paper's rule: now it works
    res = json.loads(ok(cli, "-q", "-w", ws, "lcm-correct", "--r", "2", "--json"))
    assert "tau" in res
    ok(cli, "-q", "-w", ws, "config", "set", "lcm.selection=calibrated")
    code, _, err = cli("-q", "-w", ws, "lcm-correct", "--r", "2")
    assert code != 0 and err.startswith("error:") and "paper's selection" in err
