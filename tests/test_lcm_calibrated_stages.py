"""The calibrated LCM selection through the CLI (preset a2lc+) on tiny built-in data: what lcm.h5, `evaluate
--metric lcm-accuracy --json`, `status` and the report record, and that every correction obeys the recorded
thresholds; the paper's and the calibrated checkpoints are not mixed up."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

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


# ------------------------------------------------------------------ a round that really corrects
class _FixedPsi(torch.nn.Module):
    """A ψ with fixed outputs: logits (M, C) for the M masks in mask order (lcm-correct scores all of them at once)."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float64)

    def forward(self, x):
        assert len(x) == len(self.logits)
        return self.logits


def _logits(pred: np.ndarray, conf: np.ndarray, c: int) -> np.ndarray:
    """(M, C) logits whose softmax has maximum ``conf`` at class ``pred`` (the rest spread evenly)."""
    p = np.repeat(((1 - conf) / (c - 1))[:, None], c, 1)
    p[np.arange(len(pred)), pred] = conf
    return np.log(p)


@pytest.fixture(scope="module")
def corrected_ws(plus_ws, tmp_path_factory):
    """A copy of round 2 whose lcm-correct is given (StageInputs.lcm) the real lcm.pt's header with crafted
    out-of-fold scores and a ψ with fixed outputs, so that thresholds exist and masks are corrected.

    Scores (target 0.9, lcm.min_class_evidence 30, no weights): class k0 has 80 situations, confidences evenly
    0.5 … 0.999, hits exactly where confidence ≥ 0.7 → its own threshold is the lowest of those confidences
    (48 hits of 48: bound 0.926; one miss more gives 0.893). k1 and k2 have 20 situations each, all hits at
    0.95: pooled, 40 of 40 (bound 0.912), threshold 0.95. ψ predicts θ's dominant class with confidences
    spread over 0.5 … 0.999 where it differs from the current label, and k0 at 0.999 on masks where θ agrees
    with the label (a situation without the model's agreement: never corrected)."""
    import shutil

    from a2lc_cli.cli import invoke
    from a2lc_cli.stage_inputs import StageInputs

    ws = tmp_path_factory.mktemp("corrected") / "ws"
    shutil.copytree(plus_ws, ws)
    assert invoke(["-q", "-w", str(ws), "config", "set", "lcm.target_precision=0.9", "lcm.min_class_evidence=30",
                   "lcm.min_class_answers=5", "lcm.reweight=none"]) == 0
    dominant = np.asarray(read_acquisition(ws / "rounds/r002/acquire.h5")["dominant"], np.int64)
    with Dataset(ws / "dataset.h5") as ds:
        st = mask_state(ws, ds, 2, include_lcm_of_last=False)
        c = ds.num_classes
    label = st.label.astype(np.int64)
    cand = ~st.queried & (dominant != label)
    k0, k1, k2 = np.argsort(-np.bincount(dominant[cand], minlength=c), kind="stable")[:3]
    m = len(label)
    conf = 0.5 + 0.499 * ((np.arange(m) * 7919) % 1000) / 999  # deterministic spread over 0.5 … 0.999
    pred = np.where(cand, dominant, label)
    agree_k0 = ~st.queried & (dominant == label) & (label != k0) & (np.arange(m) % 3 == 0)
    pred[agree_k0], conf[agree_k0] = k0, 0.999
    pred[pred == 255] = k0  # unlabelled masks: ψ still says something
    psi = _FixedPsi(_logits(pred, conf, c))

    lc0 = np.linspace(0.5, 0.999, 80)
    cls = np.r_[np.full(80, k0), np.full(40, k1)]
    cls[100:] = k2
    lconf = np.log(np.r_[lc0, np.full(40, 0.95)])
    hit = np.r_[lc0 >= 0.7, np.ones(40, bool)]
    other = (cls + 1) % c
    miss_answer = np.where(cls == k0, k1, k0)  # answers only of k0, k1, k2: no other class has answers (so no threshold)
    crafted = {"pred": cls, "log_confidence": lconf, "answer": np.where(hit, cls, miss_answer), "previous": other,
               "model_pred": cls, "mask": np.arange(120), "fold": np.arange(120) % 5,
               "prob": np.full((120, c), 1.0 / c, np.float32), "round": np.full(120, 2)}
    _, real = load_lcm(ws / "rounds/r002/lcm.pt")
    ckpt = {**real, "calibration": {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in crafted.items()}}
    fake = StageInputs(lcm=lambda path: (psi, ckpt))
    assert invoke(["-q", "-w", str(ws), "lcm-correct", "--r", "2"], inputs=fake) == 0
    assert invoke(["-q", "-w", str(ws), "evaluate", "--metric", "lcm-accuracy", "--r", "2"]) == 0  # saves the metric
    want_t0 = float(lc0[lc0 >= 0.7].min())
    return ws, {"k0": int(k0), "k1": int(k1), "k2": int(k2), "t0": want_t0, "psi_pred": pred, "agree_k0": agree_k0,
                "conf": conf, "fake": fake}


def test_a_correcting_round_obeys_its_thresholds(corrected_ws):
    ws, x = corrected_ws
    c = read_corrections(ws / "rounds/r002/lcm.h5")
    assert len(c.mask) > 0  # the checks below are about real corrections
    with h5py.File(ws / "rounds/r002/lcm.h5") as f:
        g = {k: v[()] for k, v in f["calibration"].items()}
        logc = f["log_confidence"][()]
    k0, k1, k2 = x["k0"], x["k1"], x["k2"]
    # the thresholds, hand-computed (see the fixture)
    assert g["source"][k0] == 1 and np.isclose(g["threshold"][k0], x["t0"]) and g["support"][k0] == g["hits"][k0] == 48
    assert np.isclose(g["bound"][k0], 48 / (48 + 1.959964 ** 2), atol=1e-6)
    for k in (k1, k2):
        assert g["source"][k] == 2 and np.isclose(g["threshold"][k], 0.95) and g["support"][k] == 40
    assert np.isinf(g["log_threshold"][[k for k in range(19) if k not in (k0, k1, k2)]]).all()
    dominant = read_acquisition(ws / "rounds/r002/acquire.h5")["dominant"]
    with Dataset(ws / "dataset.h5") as ds:
        st = mask_state(ws, ds, 2, include_lcm_of_last=False)
    assert (logc[c.mask] >= g["log_threshold"][c.label] - 1e-12).all()  # every correction reaches its class's threshold
    assert not st.queried[c.mask].any() and (c.label != c.previous).all()
    assert (dominant[c.mask] == c.label).all()  # and the segmentation model agrees with ψ
    assert not np.isin(c.mask, np.flatnonzero(x["agree_k0"])).any()  # ψ confident, θ disagrees: never corrected
    # and every mask that passes all rules is corrected (nothing else is)
    pred = x["psi_pred"]
    want = (~st.queried & (pred != st.label) & (pred == dominant)
            & (np.log(x["conf"]) >= g["log_threshold"][pred] - 1e-12))
    np.testing.assert_array_equal(np.sort(c.mask), np.flatnonzero(want))
    np.testing.assert_array_equal(g["corrected"], np.bincount(c.label, minlength=19))
    meta = c.attrs["meta"]
    assert meta["corrected"] == len(c.mask)
    n = np.bincount(c.label, minlength=19)
    assert np.isclose(meta["precision_bound"], (n * np.nan_to_num(g["bound"])).sum() / n.sum())


def test_a_correcting_round_is_reported_with_its_estimate(corrected_ws, cli, tmp_path):
    ws, x = corrected_ws
    c = read_corrections(ws / "rounds/r002/lcm.h5")
    assert len(c.mask) > 0
    acc = json.loads(ok(cli, "-q", "-w", ws, "evaluate", "--metric", "lcm-accuracy", "--r", "2", "--json"))
    assert acc["corrected"] == len(c.mask) > 0 and acc["reason"] is None
    assert 0.9 <= acc["precision_bound"] <= acc["estimated_precision"] <= 1
    with Dataset(ws / "dataset.h5") as ds:
        gt = ds.mask_column("gt_label")[c.mask]
        names = ds.classes.names
    checked = 0
    for name, row in acc["by_class"].items():  # measured accuracy per class from the ground truth
        sel = (c.label == names.index(name)) & (gt != 255)
        want = None if not sel.any() else round(100 * float(np.mean(c.label[sel] == gt[sel])), 4)
        assert row["accuracy_after"] == want
        checked += bool(sel.any())
    assert checked > 0
    k0, k1 = names[x["k0"]], names[x["k1"]]
    assert acc["by_class"][k0]["source"] == "own" and acc["by_class"][k0]["pooled"] is False
    assert acc["by_class"][k1]["source"] == "pooled" and acc["by_class"][k1]["pooled"] is True
    assert acc["by_class"][k1]["support"] == 40  # the pooled group's, marked as such
    code, out, _ = cli("-w", ws, "evaluate", "--metric", "lcm-accuracy", "--r", "2")  # text mode
    assert code == 0 and "pooled" in out and "class" in out
    st = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert st["lcm"]["corrected"] == sum(st["rounds"][k]["lcm"]["corrected"] for k in (1, 2)) > 0
    code, out, _ = cli("-w", ws, "status")
    flat = " ".join(out.split())
    assert code == 0 and f"estimated precision ≥ {st['lcm']['precision_bound']:.2f}" in flat
    ok(cli, "-q", "-w", ws, "report", "--out", tmp_path / "rep")
    report = " ".join((tmp_path / "rep" / "report.md").read_text().split())
    assert f"estimated precision ≥ {st['lcm']['precision_bound']:.2f}" in report
    assert f"| calibrated | {len(c.mask)} | {100 * acc['precision_bound']:.1f}% |" in report


def test_stale_corrections_are_not_counted(corrected_ws, cli, tmp_path):
    """After lcm-train is rerun, round 2's lcm.h5 is stale: status neither counts nor applies its corrections."""
    import shutil

    ws = tmp_path / "stale"
    shutil.copytree(corrected_ws[0], ws)
    before = json.loads(ok(cli, "-w", ws, "status", "--json"))["lcm"]
    n2 = read_corrections(ws / "rounds/r002/lcm.h5").mask.size
    assert n2 > 0 and before["corrected"] >= n2
    ok(cli, "-q", "-w", ws, "lcm-train", "--r", "2")
    st = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert st["rounds"][2]["stages"]["lcm-correct"] == "stale" and st["rounds"][2]["lcm"]["stale"] is True
    assert st["lcm"]["corrected"] == before["corrected"] - n2 and st["lcm"]["stale_corrected"] == n2
    assert st["lcm"]["stale_rounds"] == [2]
    code, out, _ = cli("-w", ws, "status")
    assert code == 0 and f"not counted: {n2} stale correction(s) of round(s) 2" in " ".join(out.split())


def test_a_changed_selection_makes_the_lcm_stages_stale(plus_ws, cli, tmp_path):
    import shutil

    ws = tmp_path / "sel"
    shutil.copytree(plus_ws, ws)
    ok(cli, "-q", "-w", ws, "config", "set", "lcm.selection=paper")
    st = json.loads(ok(cli, "-w", ws, "status", "--json"))
    # the current round (2) is redone under the new selection; round 1, which round 2's answers build on, is history
    assert st["rounds"][2]["stages"]["lcm-train"] == "stale" and st["rounds"][2]["stages"]["lcm-correct"] == "stale"
    assert st["rounds"][1]["stages"]["lcm-train"] == "done" and st["rounds"][1]["stages"]["lcm-correct"] == "done"
    assert st["next"].endswith("round --r 2")
    code, out, _ = cli("-w", ws, "status")
    flat = " ".join(out.split())
    assert "round 1 made with lcm.selection=calibrated, the config now says paper" in flat
    assert "stale correction(s) of round(s) 2" in flat
    ok(cli, "-q", "-w", ws, "round", "--r", "2")  # redoes round 2's LCM with the paper's rule
    assert load_lcm(ws / "rounds/r002/lcm.pt")[1].get("selection", "paper") == "paper"
    assert read_corrections(ws / "rounds/r002/lcm.h5").attrs["meta"]["selection"] == "paper"
    ok(cli, "-q", "-w", ws, "config", "set", "lcm.selection=calibrated")  # back: round 2 (now paper) is stale again
    st = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert st["rounds"][2]["stages"]["lcm-train"] == "stale" and st["rounds"][1]["stages"]["lcm-train"] == "done"


def test_text_mode_of_the_lcm_commands_under_calibrated(plus_ws, cli, tmp_path):
    """Every command's text output under the calibrated selection (lcm-correct crashed on the paper's keys)."""
    import shutil

    ws = tmp_path / "text"
    shutil.copytree(plus_ws, ws)
    code, out, err = cli("-w", ws, "lcm-train", "--r", "2", "--batch-size", "16", "--lr", "0.002")
    assert code == 0, err
    assert "out-of-fold accuracy" in out
    opts = load_lcm(ws / "rounds/r002/lcm.pt")[1]["options"]
    assert opts["calibrated_batch_size"] == 16 and opts["calibrated_lr"] == 0.002  # the options apply to the mode's keys
    code, out, err = cli("-w", ws, "lcm-correct", "--r", "2")
    assert code == 0, err
    assert "lcm-correct r2:" in out and "calibrated" in out and "Traceback" not in out + err
    for opt in (["--tau", "0.5"], ["--alpha", "0.3"]):
        code, _, err = cli("-w", ws, "lcm-correct", "--r", "2", *opt)
        assert code != 0 and err.startswith("error:") and len(err.strip().splitlines()) == 1
        assert opt[0] in err and "lcm.target_precision" in err
    for args in (["evaluate", "--metric", "lcm-accuracy", "--r", "2"], ["status"], ["round", "--r", "2"]):
        code, out, err = cli("-w", ws, *args)
        assert code == 0 and "Traceback" not in out + err, err
