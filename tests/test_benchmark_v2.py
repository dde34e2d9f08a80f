"""Built-in benchmark v2 (issue 14): the simulated foundation model errs like real Grounded SAM,
and the faithful-reproduction switches (KL reference, tail size, τ schedule, ALC's ≤ 50% rule, ψ's loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from a2lc_cli.acquisition import adaptive_class_weights
from a2lc_cli.annotator import answer_with_ground_truth, correct_share
from a2lc_cli.query import pixel_ground_truth
from a2lc_cli.config import Config, parse_config
from a2lc_cli.data.base import VOID
from a2lc_cli.data.synthetic import LURE_Z, ROLE_DECOY, ROLE_PART, SyntheticSource
from a2lc_cli.labelers.simulate import (
    KIND_DECOY,
    KIND_OBJECT,
    KIND_PART,
    NOISE,
    NOISE_VERSION,
    SimulatedFoundationModel,
)
from a2lc_cli.lcm import tail_classes, train_lcm
from a2lc_cli.query import default_budget
from a2lc_cli.state import Dataset, mask_majority

from support import write_workspace

SEEDS = (0, 1)


def _model(preset: str, seed: int, n: int) -> tuple[SyntheticSource, SimulatedFoundationModel]:
    cfg = Config()
    cfg.seed, cfg.source.preset = seed, preset
    src = SyntheticSource(preset=preset, seed=seed, n_train=n)
    return src, SimulatedFoundationModel(cfg, src)


def _voc_records(seed: int, n: int) -> dict[str, np.ndarray]:
    """Per-mask label, GT majority, kind and z, and per-image counts, over n voc train images."""
    src, lab = _model("voc", seed, n)
    rec: dict[str, list] = {"label": [], "maj": [], "kind": [], "z": [], "fp": [], "covered": [], "pixels": []}
    for i in range(n):
        p, info = lab.simulate(i)
        gt = src.label("train", i).ravel()
        seg = p.segment.ravel()
        cov = seg >= 0
        k = int(p.score.shape[0])
        label = np.zeros(k, np.int64)
        label[seg[cov]] = p.label0.ravel()[cov]
        maj, _, _ = mask_majority(seg[cov], gt[cov], k)
        rec["label"].append(label)
        rec["maj"].append(maj.astype(np.int64))
        rec["kind"].append(info["kind"])
        rec["z"].append(info["z"])
        rec["fp"].append(int(((maj == 0) & (label != 0)).sum()))
        rec["covered"].append(int(cov.sum()))
        rec["pixels"].append(seg.size)
        # uncovered pixels are background and no mask
        assert (p.label0.ravel()[~cov] == 0).all()
    return {k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else np.array(v)) for k, v in rec.items()}


# --------------------------------------------------------------------------- voc: masks only from detections
@pytest.mark.parametrize("seed", SEEDS)
def test_voc_masks_come_only_from_detections(seed):
    r = _voc_records(seed, 60)
    # no mask is ever labelled background
    assert (r["label"] != 0).all()
    # false positives on background: real Grounded SAM 2.34 per image on the whole train set; on 60 images
    # the quota gives ≈ 1.8 (a rare class's decoys follow its own pixels), so the band still fails for no
    # decoys or twice the rate; the default-size test below holds it to 1.9–2.8
    fp_per_image = r["fp"].mean()
    assert 1.5 <= fp_per_image <= 3.3
    # coverage: real 36.7% of all pixels
    coverage = r["covered"].sum() / r["pixels"].sum()
    assert 0.22 <= coverage <= 0.5
    # all kinds of errors occur: decoys named as objects on background, parts inside objects
    assert (r["kind"] == KIND_DECOY).sum() >= 60 and (r["kind"] == KIND_PART).sum() >= 30
    # wrong share of the non-void masks: real 63%
    other = r["maj"] != VOID
    wrong = other & (r["label"] != r["maj"])
    assert 0.45 <= wrong.sum() / other.sum() <= 0.75


def test_voc_false_positive_rate_at_the_default_size():
    """On the preset's whole train set (where the quotas are calibrated) the rate is near the real 2.34
    per image: within ±20%; a small set (above, 60 images) has fewer (a rare class's decoys are
    detected in proportion to that class's own pixels, and few images hold it)."""
    r = _voc_records(0, SyntheticSource(preset="voc").counts["train"])
    assert 1.9 <= r["fp"].mean() <= 2.8


@pytest.mark.parametrize("seed", SEEDS)
def test_voc_errors_have_a_visual_cause(seed):
    """Decoys and parts are drawn to look like the class they are called (z ≥ LURE_Z[0] = 0.75 pulls their
    appearance towards it), so a wrong mask's latent is high; the objects' own detections are mostly typical."""
    r = _voc_records(seed, 40)
    other = r["maj"] != VOID
    wrong = other & (r["label"] != r["maj"])
    right = other & ~wrong
    assert r["z"][wrong].mean() > r["z"][right].mean() + 0.3
    lured = np.isin(r["kind"], [KIND_DECOY, KIND_PART])
    assert (r["z"][lured] >= LURE_Z[0]).all() and LURE_Z[0] >= 0.75
    # and the scene paints them: a decoy region is background in the ground truth, a part belongs to its object
    src = SyntheticSource(preset="voc", seed=seed, n_train=40)
    for i in range(40):
        s = src.scene("train", i)
        gt = src.label("train", i)
        for reg in np.flatnonzero(s.role == ROLE_DECOY):
            assert s.cls[reg] == 0 and s.partner[reg] != 0
        for reg in np.flatnonzero((s.role == ROLE_PART) & (s.parent >= 0)):
            assert s.cls[reg] == s.cls[s.parent[reg]] and s.partner[reg] != s.cls[reg]
        assert not (gt == VOID)[s.role[s.region] == ROLE_DECOY].any()


@pytest.mark.parametrize("seed", SEEDS)
def test_voc_false_positive_pixels_are_a_quota_per_label(seed):
    """Decoys that look like class c are detected until their pixels are decoy_ratio[c] × the seed's
    ground-truth pixels of c (up to one decoy; all of them where the seed drew too few)."""
    n = 120
    src, lab = _model("voc", seed, n)
    ratio = np.asarray(NOISE["voc"].decoy_ratio)
    c = ratio.size
    gt, have, got, biggest = np.zeros(c), np.zeros(c), np.zeros(c), np.zeros(c)
    for i in range(n):
        s = src.scene("train", i)
        px = np.bincount(s.region.ravel(), minlength=s.n_regions).astype(np.float64)
        obj = s.thing & (s.cls < c)
        gt += np.bincount(s.cls[obj].astype(np.int64), weights=px[obj], minlength=c)
        dec = np.flatnonzero((s.role == ROLE_DECOY) & (px > 0))
        lure = s.partner[dec].astype(np.int64)
        det = lab.decisions(i, s)["decoy"][dec]
        have += np.bincount(lure, weights=px[dec], minlength=c)
        got += np.bincount(lure, weights=px[dec] * det, minlength=c)
        np.maximum.at(biggest, lure, px[dec])
    target = np.minimum(ratio * gt, have)
    assert (np.abs(got - target) <= biggest + 1e-9).all()
    sinks = [src.classes.names.index(k) for k in ("aeroplane", "tvmonitor", "sofa", "diningtable")]
    assert (got[sinks] > 0).all()  # the sinks' false positives are there on every seed


# the classes real Grounded SAM's wrong VOC labels go to (../shared/reference/real-grounded-sam.md): the targets
# of whole-object mislabels (car→tvmonitor, cat/train/boat/bird/bicycle→aeroplane, chair→sofa) and the
# "sink" classes that carry most wrong masks (chair, person, tvmonitor, bottle)
REAL_SINKS = ("aeroplane", "tvmonitor", "sofa", "chair", "person", "bottle")


@pytest.mark.parametrize("seed", SEEDS)
def test_voc_object_mislabels_go_to_sinks(seed):
    names = SyntheticSource(preset="voc").classes.names
    r = _voc_records(seed, 120)
    obj = (r["kind"] == KIND_OBJECT) & (r["maj"] != VOID) & (r["maj"] != 0)
    flipped = obj & (r["label"] != r["maj"])
    assert 0.02 <= flipped.sum() / obj.sum() <= 0.25
    # most whole-object mislabels name a real sink, not a look-alike of the object (v1: cow/sheep/horse flips)
    sinks = [names.index(n) for n in REAL_SINKS]
    assert np.isin(r["label"][flipped], sinks).mean() >= 0.75
    counts = np.bincount(r["label"][flipped], minlength=len(names))
    assert set(np.argsort(-counts, kind="stable")[:2].tolist()) == {names.index("aeroplane"), names.index("tvmonitor")}


# --------------------------------------------------------------------------- city: class-level confusions
@pytest.mark.parametrize("seed", SEEDS)
def test_city_confusions_are_class_level(seed):
    src, lab = _model("city", seed, 80)
    names = src.classes.names
    idx = {n: k for k, n in enumerate(names)}
    true, label = [], []
    for i in range(80):
        p, info = lab.simulate(i)
        per_mask = np.zeros(int(p.score.shape[0]), np.int64)
        cov = p.segment >= 0
        per_mask[p.segment[cov]] = p.label0[cov]
        true.append(info["true"].astype(np.int64))
        label.append(per_mask)
    t, lb = np.concatenate(true), np.concatenate(label)

    def share(a: str, b: str) -> float:
        sel = t == idx[a]
        return float((lb[sel] == idx[b]).mean())

    assert share("traffic light", "traffic sign") >= 0.85  # nearly every light (real IoU 2.4)
    assert share("rider", "person") >= 0.7  # real IoU 8.8
    big = np.isin(t, [idx["truck"], idx["bus"], idx["train"]])  # few per image: pooled
    assert (lb[big] != t[big]).mean() >= 0.4  # real IoU 16–28
    assert np.isin(lb[big & (lb != t)], [idx["truck"], idx["bus"], idx["train"], idx["car"]]).all()
    # look-alike flips of head classes stay rare
    for c in ("road", "sky", "car"):
        assert share(c, c) >= 0.85


@pytest.mark.parametrize("preset", ["voc", "city"])
def test_simulation_is_deterministic_per_seed_and_image(preset):
    _, a = _model(preset, 1, 12)
    a_first = {i: a.simulate(i)[0] for i in (3, 7)}
    SyntheticSource.clear_cache()  # another instance that renders everything anew, images read in another order
    _, b = _model(preset, 1, 12)
    _, other = _model(preset, 2, 12)
    for i in (7, 3):
        p, q = a_first[i], b.simulate(i)[0]
        np.testing.assert_array_equal(p.segment, q.segment)
        np.testing.assert_array_equal(p.label0, q.label0)
        np.testing.assert_array_equal(p.score, q.score)
    assert any(not np.array_equal(a.simulate(i)[0].label0, other.simulate(i)[0].label0) for i in range(4))
    assert a.meta()["noise_version"] == NOISE_VERSION >= 3


def test_default_budgets_sit_at_the_papers_operating_point():
    cfg = Config()
    cfg.source.preset = "voc"
    assert default_budget(cfg, 11257) == 1013  # the paper: 1,000 of ≈11k real VOC masks per round
    cfg.source.preset = "city"
    assert default_budget(cfg, 10000) == 200
    cfg.method.budget_share = 0.05
    assert default_budget(cfg, 10000) == 500
    assert NOISE["voc"].flip_rate[0] == 0.0  # background is never a detection of its own


# --------------------------------------------------------------------------- switches: KL, tail, τ
def test_kl_against_present_labels_and_against_all_classes_by_hand():
    counts = np.array([100, 10, 0, 50])
    p = [100 / 160, 10 / 160, 50 / 160]
    w_all, kl_all, _ = adaptive_class_weights(counts, uniform="all")
    w_present, kl_present, rarity = adaptive_class_weights(counts, uniform="present")
    assert kl_all == pytest.approx(sum(pi * math.log(pi * 4) for pi in p), rel=1e-12)
    assert kl_present == pytest.approx(sum(pi * math.log(pi * 3) for pi in p), rel=1e-12)
    assert kl_present == pytest.approx(0.268089, abs=1e-6)  # = KL_all − log(4/3) = 0.555771 − 0.287682
    np.testing.assert_allclose(w_present, [0.1 ** kl_present**3, 1.0, 0.0, 0.2 ** kl_present**3], rtol=1e-12)
    np.testing.assert_allclose(w_present, [0.956604, 1.0, 0.0, 0.969465], atol=1e-6)  # KL³ = 0.019268
    # with every class present the two readings coincide
    full = np.array([5, 9, 30])
    assert adaptive_class_weights(full, uniform="present")[1] == pytest.approx(adaptive_class_weights(full, uniform="all")[1])
    with pytest.raises(ValueError):
        adaptive_class_weights(counts, uniform="some")


def test_tail_size_floor_and_ceil_by_hand():
    counts = np.array([50, 0, 7, 3, 0, 20, 9])  # 7 classes, α = 0.5: ⌊3.5⌋ = 3, ⌈3.5⌉ = 4
    tail, rarest = tail_classes(counts, 0.5, size="floor")
    np.testing.assert_array_equal(tail, [1, 3, 4])
    assert rarest == 1
    np.testing.assert_array_equal(tail_classes(counts, 0.5, size="ceil")[0], [1, 2, 3, 4])
    assert len(tail_classes(np.arange(19), 0.5)[0]) == 9  # the authors' 9 of 19 (default)
    assert len(tail_classes(np.arange(19), 0.5, size="ceil")[0]) == 10
    assert len(tail_classes(np.arange(21), 0.5)[0]) == 10
    assert len(tail_classes(np.arange(10), 0.3, size="ceil")[0]) == 3  # 0.3·10 is 3, not 3.0000000000000004
    with pytest.raises(ValueError):
        tail_classes(counts, 0.5, size="round")


def test_tau_schedule_by_dataset_and_override():
    cfg = Config()
    assert [cfg.tau_for_round(r) for r in (1, 3, 5, 7)] == [0.99, 0.999, 0.9999999, 0.9999999]
    cfg.source.preset = "voc"
    assert [cfg.tau_for_round(r) for r in (1, 3, 5)] == [0.99, 0.99, 0.99]  # the authors' VOC scripts
    cfg.lcm.tau = [0.99, 0.99, 0.999, 0.9999, 0.9999999]
    assert cfg.tau_for_round(5) == 0.9999999
    cfg = parse_config({"source": {"kind": "voc", "root": "/x"}})
    assert cfg.tau_schedule() == [0.99]
    assert parse_config({}).method.kl_uniform == "present" and parse_config({}).lcm.tail_size == "floor"
    assert parse_config({}).lcm.loss == "ce" and parse_config({}).method.pixel_relabel == "at-most-half"


def test_softmax_ce_drives_psi_confidence_towards_one():
    """The authors' loss (CE on softmax outputs) never saturates, so ψ's confidence keeps rising;
    with CE on logits the same short training leaves it lower."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    conf = {}
    for loss in ("ce", "softmax-ce"):
        model, log = train_lcm(x, y, 2, epochs=30, batch_size=8, lr=1e-2, hidden=(16,), seed=0, loss=loss)
        assert log["train_accuracy"] > 0.8
        with torch.no_grad():
            conf[loss] = float(torch.softmax(model(torch.as_tensor(x)), 1).max(1).values.mean())
    assert conf["softmax-ce"] > conf["ce"]
    with pytest.raises(ValueError):
        train_lcm(x, y, 2, epochs=1, loss="focal")


# --------------------------------------------------------------------------- ALC's ≤ 50% rule
def test_correct_share_by_hand():
    seg = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1])
    gt = np.array([1, 1, 1, 2, 2, 2, 1, VOID, 1])
    np.testing.assert_allclose(correct_share(seg, gt, np.array([1, 1])), [0.75, 0.25])
    np.testing.assert_allclose(correct_share(seg, gt, np.array([2, 2, 0])), [0.25, 0.5, 0.0])


def test_alc_annotator_relabels_only_masks_at_most_half_right(tmp_path):
    # image 0 (2×4): mask 0 = left half, 3 of 4 pixels truly class 1; mask 1 = right half, 1 of 4
    # image 1 (2×4): mask 2 = all of it, exactly half class 1
    seg0 = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    gt0 = np.array([[1, 1, 2, 2], [1, 2, 1, VOID]], np.uint8)
    seg1 = np.zeros((2, 4), np.int64)
    gt1 = np.array([[1, 1, 1, 1], [2, 2, 2, 2]], np.uint8)
    lab0 = np.ones((2, 4), np.uint8)
    ws, _ = write_workspace(tmp_path / "ws", num_classes=3, segments=[seg0, seg1], labels0=[lab0, lab0.copy()],
                            gts=[gt0, gt1])
    current = np.array([1, 1, 1], np.uint8)
    # representative pixels (flat index in the mask's image) all fall on a class-2 pixel
    rep = np.array([5, 2, 4])
    with Dataset(ws.dataset_path) as ds:
        ids = np.array([0, 1, 2])
        rep_gt, share = pixel_ground_truth(ds, ids, rep, current)  # the stage reads the dataset
    np.testing.assert_array_equal(rep_gt, [2, 2, 2])
    np.testing.assert_allclose(share, [0.75, 0.25, 0.5])
    half = answer_with_ground_truth(ids, unit="pixel", rep_gt=rep_gt, share=share, current=current, relabel="at-most-half")
    always = answer_with_ground_truth(ids, unit="pixel", rep_gt=rep_gt, relabel="always")
    with pytest.raises(ValueError):
        answer_with_ground_truth(ids, unit="pixel", rep_gt=rep_gt, relabel="at-most-half")  # no current labels
    # mask 0 is 75% right: kept; mask 1 is 25% right, mask 2 exactly 50%: relabelled from the pixel
    np.testing.assert_array_equal(half, [1, 2, 2])
    np.testing.assert_array_equal(always, [2, 2, 2])


def test_the_annotator_rules_take_arrays_by_hand():
    """annotator.py reads no files: the answers from arrays alone."""
    gt_label = np.array([3, VOID, 1, 0], np.uint8)
    np.testing.assert_array_equal(answer_with_ground_truth(np.array([2, 1]), unit="mask", gt_label=gt_label), [1, VOID])
    ids = np.array([0, 3])
    current = np.array([5, 6, 7, 8], np.uint8)
    got = answer_with_ground_truth(ids, unit="pixel", rep_gt=np.array([4, 4]), share=np.array([0.51, 0.5]),
                                   current=current, relabel="at-most-half")
    np.testing.assert_array_equal(got, [5, 4])  # more than half right keeps its label; exactly half is relabelled


def _as_benchmark_v1(dataset_path, version: int = 1) -> None:
    """What an older benchmark left on disk: the same file format, its meta saying ``noise_version``."""
    import json

    import h5py

    with h5py.File(dataset_path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        meta["noise_version"] = version
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)


def test_a_benchmark_v2_dataset_is_outdated_too(tmp_path, cli):
    """v3 changed the masks again (quotas): a v2 dataset is stale; plain pseudolabel rebuilds it while no
    round was computed from it."""
    import json

    ws = tmp_path / "ws"
    for args in (["init"], ["config", "set", "source.n_train=4"], ["config", "set", "source.n_val=2"],
                 ["config", "set", "source.height=32"], ["config", "set", "source.width=64"], ["pseudolabel"]):
        code, _, err = cli("-w", ws, *args)
        assert code == 0, err
    _as_benchmark_v1(ws / "dataset.h5", version=2)
    code, out, err = cli("-w", ws, "status", "--json")
    st = json.loads(out)
    assert code == 0 and st["dataset"]["pseudolabel"] == "stale" and "benchmark v2" in st["dataset"]["outdated"]
    assert "budget_share" not in st["dataset"]["outdated"]  # v2 configs carry no explicit share
    code, _, err = cli("-w", ws, "pseudolabel")
    assert code == 0, err
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.meta["noise_version"] == NOISE_VERSION == 3


def test_status_reports_an_older_benchmarks_dataset_as_stale_and_pseudolabel_force_rebuilds_it(tmp_path, cli):
    import json
    import shlex

    ws = tmp_path / "ws"
    tiny = ["source.n_train=6", "source.n_val=2", "source.height=32", "source.width=64"]
    code, _, err = cli("-w", ws, "init")
    assert code == 0, err
    for kv in tiny + ["method.budget_share=0.04"]:  # v1 wrote its default share into every config
        code, _, err = cli("-w", ws, "config", "set", kv)
        assert code == 0, err
    code, _, err = cli("-w", ws, "pseudolabel")
    assert code == 0, err
    code, out, err = cli("-w", ws, "status", "--json")
    assert code == 0 and json.loads(out)["dataset"].get("pseudolabel") is None  # this version's: not stale

    from a2lc_cli.labelers import benchmark_version

    assert benchmark_version.LABELER == SimulatedFoundationModel.name  # the check names the right labeler
    _as_benchmark_v1(ws / "dataset.h5")
    (ws / "rounds/r000").mkdir(parents=True)  # a round was computed from it
    code, out, err = cli("-w", ws, "status", "--json")
    st = json.loads(out)
    assert code == 0 and st["dataset"]["pseudolabel"] == "stale"
    assert st["next"].startswith("a2lc ") and st["next"].endswith(" pseudolabel --force")
    assert "benchmark v1" in st["dataset"]["outdated"] and "method.budget_share 0.04" in st["dataset"]["outdated"]
    code, out, err = cli("-w", ws, "status")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1 and f"v{NOISE_VERSION}" in warnings[0], err
    assert "pseudolabel --force`" in warnings[0] and "new workspace" in warnings[0]
    # the command the line gives for the share works as written
    fix = warnings[0].split("`")[-2]
    assert fix.endswith("config set method.budget_share=null")
    code, _, err = cli(*shlex.split(fix)[1:])
    assert code == 0, err
    code, out, err = cli("-w", ws, "status", "--json")
    assert "budget_share" not in json.loads(out)["dataset"]["outdated"]

    code, _, err = cli("-w", ws, "pseudolabel", "--force")
    assert code == 0, err
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.meta["noise_version"] == NOISE_VERSION
    code, out, err = cli("-w", ws, "status", "--json")
    assert code == 0 and "outdated" not in json.loads(out)["dataset"] and "warning" not in err
