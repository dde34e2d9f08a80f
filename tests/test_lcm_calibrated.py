"""Calibrated LCM selection (beyond the paper): the precision bound, the threshold choice, cross-fitting,
and the selection end to end on crafted features (docs/lcm-calibrated.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from a2lc_cli.config import Config, parse_config, resolve_lcm, resolve_method
from a2lc_cli.errors import A2LCError
from a2lc_cli.lcm import predict_confidence
from a2lc_cli.lcm_calibration import (
    NONE,
    OWN,
    POOLED,
    calibrate_thresholds,
    lowest_threshold,
    min_support_to_pass,
    precision_summary,
    select_calibrated,
    wilson_lower_bound,
)
from a2lc_cli.lcm_crossfit import stratified_folds, train_crossfit

Z2 = 1.96 ** 2  # the hand computations below use z = 1.96 (the code: Φ⁻¹(0.975) = 1.959964), hence atol 2e-4


# --------------------------------------------------------------------------- the bound
def test_wilson_lower_bound_hand_computed():
    # 9 of 10: p = 0.9, z²/n = 0.38416, centre = 0.9 + 0.19208 = 1.09208,
    # half = 1.96·√(0.009 + 0.009604) = 0.267336, (1.09208 − 0.267336) / 1.38416 = 0.595844
    assert wilson_lower_bound(9, 10) == pytest.approx(0.595844, abs=2e-4)
    # all hits: the bound is n / (n + z²): 35 / 38.8416 = 0.901096 (≥ 0.9), 34 / 37.8416 = 0.898482 (< 0.9)
    assert wilson_lower_bound(35, 35) == pytest.approx(35 / (35 + Z2), abs=2e-4)
    assert wilson_lower_bound(34, 34) < 0.9 <= wilson_lower_bound(35, 35)
    assert min_support_to_pass(0.9) == 35
    # no hits → 0; no trials → 0 (no evidence); vectorised over arrays
    np.testing.assert_allclose(wilson_lower_bound(np.array([0, 0, 9]), np.array([10, 0, 10])), [0.0, 0.0, 0.595844], atol=2e-4)
    # a wider interval (higher level) gives a lower bound
    assert wilson_lower_bound(9, 10, 0.99) < wilson_lower_bound(9, 10, 0.95) < wilson_lower_bound(9, 10, 0.5) < 0.9


# --------------------------------------------------------------------------- the threshold
def test_lowest_threshold_on_crafted_scores_takes_the_lowest_passing_one():
    """36 hits, 1 miss, 20 hits, 10 misses, by falling confidence. Prefix bounds (z = 1.96):
    n=36: 36/39.8416 = 0.90358 ✓; n=37 (36 hits): fails; n=57 (56 hits): p = 0.982456,
    centre = p + 1.9208/57 = 1.016154, half = 1.96·√(p(1−p)/57 + 3.8416/(4·57²)) = 0.047926,
    bound = 0.968228 / (1 + 3.8416/57) = 0.90709 ✓; n=58 (56 hits): 0.88271 ✗, and lower after.
    The lowest passing threshold is the 57th confidence, after the dip at n = 37."""
    conf = np.r_[np.linspace(0.999, 0.99, 36), 0.98, np.linspace(0.97, 0.95, 20), np.linspace(0.9, 0.8, 10)]
    hit = np.r_[np.ones(36, bool), False, np.ones(20, bool), np.zeros(10, bool)]
    perm = np.random.default_rng(0).permutation(len(conf))  # input order does not matter
    t = lowest_threshold(np.log(conf[perm]), hit[perm], target=0.9)
    assert t is not None
    assert t.log_threshold == pytest.approx(math.log(0.95))
    assert (t.support, t.hits) == (57, 56)
    assert t.precision == pytest.approx(56 / 57)
    assert t.bound == pytest.approx(0.90709, abs=2e-4)
    # a higher target than any prefix reaches: no threshold
    assert lowest_threshold(np.log(conf), hit, target=0.95) is None
    assert lowest_threshold(np.zeros(0), np.zeros(0, bool), target=0.9) is None


def test_tied_confidences_are_all_in_or_all_out():
    # 35 hits at one confidence pass alone (0.9011); a tie group of 35 hits + 1 miss at that confidence does not
    conf = np.log(np.full(36, 0.99))
    hit = np.r_[np.ones(35, bool), False]
    assert lowest_threshold(conf[:35], hit[:35], target=0.9) is not None
    assert lowest_threshold(conf, hit, target=0.9) is None


# --------------------------------------------------------------------------- per class: own, pooled, none
def _situations(pred_class, n, hits, conf=0.99, *, answers_class=None):
    """n answered masks predicted as pred_class in the situation of a correction (previous label ≠ pred),
    of which `hits` have answer = pred."""
    pred = np.full(n, pred_class)
    answer = np.where(np.arange(n) < hits, pred_class, answers_class if answers_class is not None else pred_class + 1)
    previous = np.full(n, 9)  # an unrelated class: always a situation
    return pred, np.log(np.full(n, conf)), answer, previous


def test_calibrate_thresholds_own_pooled_and_none():
    c = 10
    parts = [
        _situations(0, 40, 40),                    # class 0: 40 situations, all right → its own threshold
        _situations(1, 40, 30),                    # class 1: 40 situations, 75% right → no threshold
        _situations(2, 20, 20, answers_class=5),   # classes 2 and 3: 20 each, all right → pooled (40 ≥ 35)
        _situations(3, 20, 20, answers_class=5),
        _situations(4, 2, 2),                      # class 4: two answers only → nothing, even if right
    ]
    pred, logc, answer, previous = (np.concatenate(x) for x in zip(*parts))
    # masks where ψ agrees with the previous label are not situations of a correction: they change nothing
    pred = np.r_[pred, np.full(50, 1)]
    logc = np.r_[logc, np.zeros(50)]
    answer = np.r_[answer, np.full(50, 1)]
    previous = np.r_[previous, np.full(50, 1)]
    th = calibrate_thresholds(pred, logc, answer, previous, c, target_precision=0.9, min_class_evidence=30,
                              min_class_answers=5)
    assert th.evidence[:5].tolist() == [40, 40, 20, 20, 2]  # the 50 agreeing masks are not evidence
    assert th.source[:5].tolist() == [OWN, NONE, POOLED, POOLED, NONE]
    assert np.isfinite(th.log_threshold[[0, 2, 3]]).all() and np.isinf(th.log_threshold[[1, 4]]).all()
    assert (th.support[0], th.hits[0]) == (40, 40) and th.bound[0] == pytest.approx(40 / (40 + Z2), abs=2e-4)
    assert (th.support[2], th.hits[2]) == (40, 40)  # the pooled group's evidence
    assert th.pooled is not None and th.pooled.support == 40
    assert math.isnan(th.threshold()[1]) and th.threshold()[0] == pytest.approx(0.99)
    assert th.answers[4] == 2


def test_a_class_with_two_answers_gets_no_corrections():
    """Class 2 has two answers (both predicted right out of fold); the pooled group would pass, but a class
    ψ saw twice gets no threshold, so the final ψ's confident predictions of it change nothing."""
    parts = [_situations(0, 40, 40), _situations(1, 40, 40), _situations(2, 2, 2, answers_class=0)]
    pred, logc, answer, previous = (np.concatenate(x) for x in zip(*parts))
    th = calibrate_thresholds(pred, logc, answer, previous, 3, min_class_evidence=100, min_class_answers=5)
    assert th.source.tolist() == [POOLED, POOLED, NONE]
    chosen = select_calibrated(np.array([2, 2, 0]), np.log([0.99999, 0.999, 0.999]), np.array([0, 1, 1]),
                               np.ones(3, bool), th.log_threshold)
    assert chosen.tolist() == [False, False, True]


def test_select_calibrated_each_condition_blocks():
    log_thr = np.log([0.9, 0.99, 1.0])
    log_thr[2] = np.inf  # class 2: no threshold
    #                   ok    below-thr  no-thr   same-label queried
    pred = np.array([0, 1, 2, 0, 0])
    conf = np.array([0.95, 0.98, 0.999999, 0.95, 0.95])
    cur = np.array([1, 0, 0, 0, 1])
    eligible = np.array([True, True, True, True, False])
    assert select_calibrated(pred, np.log(conf), cur, eligible, log_thr).tolist() == [True, False, False, False, False]


def test_model_agreement_guard_applies_to_evidence_and_corrections():
    """With the segmentation model's own prediction given, a situation (and a correction) also needs ψ's class
    to be the model's: 40 right situations where the model agrees make class 0's threshold; 40 wrong ones
    where the model predicts another class are not evidence against it."""
    pred, logc, answer, previous = (np.concatenate(x) for x in zip(_situations(0, 40, 40), _situations(0, 40, 0)))
    model_pred = np.r_[np.zeros(40, int), np.ones(40, int)]
    assert np.isinf(calibrate_thresholds(pred, logc, answer, previous, 3, min_class_evidence=30).log_threshold[0])
    th = calibrate_thresholds(pred, logc, answer, previous, 3, min_class_evidence=30, model_pred=model_pred)
    assert th.source[0] == OWN and th.evidence[0] == 40
    chosen = select_calibrated(np.array([0, 0]), np.log([0.999, 0.999]), np.array([2, 2]), np.ones(2, bool),
                               th.log_threshold, model_pred=np.array([0, 1]))
    assert chosen.tolist() == [True, False]


def test_precision_summary_weights_by_corrections():
    th = calibrate_thresholds(*(np.concatenate(x) for x in zip(_situations(0, 40, 40), _situations(1, 80, 78))), 3,
                              min_class_evidence=30)
    s = precision_summary(th, np.array([0, 1, 1, 1]))
    assert s["corrected"] == 4
    assert s["estimated_precision"] == pytest.approx((1.0 + 3 * 78 / 80) / 4)
    assert s["precision_bound"] == pytest.approx((th.bound[0] + 3 * th.bound[1]) / 4)
    assert s["min_class_bound"] == pytest.approx(min(th.bound[0], th.bound[1]))
    assert precision_summary(th, np.zeros(0, np.int64))["precision_bound"] is None


# --------------------------------------------------------------------------- cross-fitting
def test_stratified_folds_spread_each_class():
    labels = np.r_[np.zeros(50, int), np.ones(7, int), np.full(3, 2)]
    fold = stratified_folds(labels, 5, seed=0)
    for k, n in ((0, 50), (1, 7), (2, 3)):
        counts = np.bincount(fold[labels == k], minlength=5)
        assert counts.sum() == n and counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, stratified_folds(labels, 5, seed=0))
    with pytest.raises(A2LCError, match="at least 5 answers"):
        stratified_folds(np.zeros(3, int), 5, seed=0)


def _blobs(n, c, rng, noise):
    y = rng.integers(0, c, n)
    x = (np.eye(c)[y] * 0.7 + rng.random((n, c)) * noise).astype(np.float32)
    return x / x.sum(1, keepdims=True), y


def test_out_of_fold_scores_never_saw_their_answer():
    """Random labels on distinct random features: the final ψ memorises them, but a ψ that did not see a
    mask's answer predicts it at chance — so the out-of-fold scores carry no leak."""
    rng = np.random.default_rng(0)
    x = rng.random((90, 8)).astype(np.float32)
    y = rng.integers(0, 3, 90)
    cf = train_crossfit(x, y, 3, folds=5, epochs=100, batch_size=32, lr=1e-2, seed=0, hidden=(64,))
    assert cf.log["train_accuracy"] > 0.8
    assert cf.log["out_of_fold_accuracy"] < 0.5
    assert cf.pred.shape == cf.log_confidence.shape == cf.fold.shape == (90,)
    assert (cf.log_confidence <= 0).all()


def test_random_labels_correct_nothing():
    rng = np.random.default_rng(1)
    c = 4
    x = rng.random((400, c)).astype(np.float32)
    answer = rng.integers(0, c, 400)
    previous = rng.integers(0, c, 400)
    cf = train_crossfit(x, answer, c, folds=5, epochs=20, batch_size=64, lr=1e-3, seed=0, hidden=(32, 16))
    th = calibrate_thresholds(cf.pred, cf.log_confidence, answer, previous, c)
    assert np.isinf(th.log_threshold).all()
    xu = rng.random((1000, c)).astype(np.float32)
    pred, logc = predict_confidence(cf.model, xu)
    assert not select_calibrated(pred, logc, rng.integers(0, c, 1000), np.ones(1000, bool), th.log_threshold).any()


def test_separable_features_correct_and_meet_the_target():
    """Answered masks: features separate the classes, half of the previous labels were wrong. Never-queried
    masks: 30% wrong labels. The selection corrects many of them, and the measured precision meets the target."""
    rng = np.random.default_rng(2)
    c = 4
    x, truth = _blobs(600, c, rng, noise=0.6)
    previous = np.where(rng.random(600) < 0.5, (truth + rng.integers(1, c, 600)) % c, truth)
    cf = train_crossfit(x, truth, c, folds=5, epochs=30, batch_size=64, lr=3e-3, seed=0, hidden=(32, 16))
    th = calibrate_thresholds(cf.pred, cf.log_confidence, truth, previous, c, target_precision=0.9)
    assert (th.source == OWN).all() and (th.bound >= 0.9).all()
    xu, tu = _blobs(3000, c, rng, noise=0.6)
    current = np.where(rng.random(3000) < 0.3, (tu + rng.integers(1, c, 3000)) % c, tu)
    pred, logc = predict_confidence(cf.model, xu)
    chosen = select_calibrated(pred, logc, current, np.ones(3000, bool), th.log_threshold)
    wrong = current != tu
    assert chosen.sum() > 0.5 * wrong.sum()  # most wrong labels are corrected
    assert (pred[chosen] == tu[chosen]).mean() >= 0.9  # the measured precision meets the target


def test_crossfit_is_deterministic_under_a_seed():
    rng = np.random.default_rng(3)
    x, y = _blobs(120, 3, rng, noise=0.8)
    a = train_crossfit(x, y, 3, folds=4, epochs=5, batch_size=16, lr=1e-3, seed=11, hidden=(16,))
    b = train_crossfit(x, y, 3, folds=4, epochs=5, batch_size=16, lr=1e-3, seed=11, hidden=(16,))
    np.testing.assert_array_equal(a.fold, b.fold)
    np.testing.assert_array_equal(a.pred, b.pred)
    np.testing.assert_array_equal(a.log_confidence, b.log_confidence)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    c = train_crossfit(x, y, 3, folds=4, epochs=5, batch_size=16, lr=1e-3, seed=12, hidden=(16,))
    assert not np.array_equal(a.log_confidence, c.log_confidence)


def test_final_member_is_a_plain_lcm_net_equal_to_the_stack():
    rng = np.random.default_rng(4)
    x, y = _blobs(60, 3, rng, noise=0.8)
    cf = train_crossfit(x, y, 3, folds=3, epochs=3, batch_size=16, lr=1e-3, seed=0, hidden=(8, 4))
    linears = [m for m in cf.model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(3, 8), (8, 4), (4, 3)]
    assert cf.log["steps"] == 3 * math.ceil(60 / 16) and cf.log["folds"] == 3


# --------------------------------------------------------------------------- config
def test_presets_resolve_the_lcm_mode():
    assert resolve_lcm(Config()) == {"selection": "paper", "train_on": "round"}
    plus = parse_config({"method": {"preset": "a2lc+"}})
    assert resolve_lcm(plus) == {"selection": "calibrated", "train_on": "all"}
    assert resolve_method(plus.method)["acquisition"] == "abc" and resolve_method(plus.method)["unit"] == "mask"
    assert resolve_method(plus.method)["lcm"] is True
    # explicit values win over the preset's
    assert resolve_lcm(parse_config({"method": {"preset": "a2lc+"}, "lcm": {"train_on": "round"}}))["train_on"] == "round"
    assert resolve_lcm(parse_config({"lcm": {"selection": "calibrated"}}))["selection"] == "calibrated"
    with pytest.raises(A2LCError, match="lcm.selection"):
        parse_config({"lcm": {"selection": "magic"}})
    with pytest.raises(A2LCError, match="lcm.target_precision"):
        parse_config({"lcm": {"target_precision": 1.5}})
