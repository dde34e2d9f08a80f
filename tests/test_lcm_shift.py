"""Selection-bias correction of the calibrated LCM selection: the propensity model, the importance weights,
the weighted threshold choice (hand-computed), and that the weighted estimate holds for the masks that were
not queried where the unweighted one does not (docs/lcm-calibrated.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from a2lc_cli.lcm_calibration import calibrate_thresholds, lowest_threshold, wilson_lower_bound
from a2lc_cli.lcm_shift import (
    density_ratios,
    effective_size,
    fit_logistic,
    overlap_weights,
    propensity_weights,
    shift_covariates,
)

Z2 = 1.96 ** 2  # hand computations use z = 1.96 (the code: 1.959964), hence atol 2e-4


def test_propensity_weights_hand_computed():
    """One binary covariate. Answered: 10 with z=0, 10 with z=1; never queried: 10 with z=0, 90 with z=1.
    Unpenalised logistic regression fits the cell frequencies: e(0) = 10/20 = 0.5, e(1) = 10/100 = 0.1,
    odds (1 − e)/e = 1 and 9; normalised to mean 1 over the answered: (10·1 + 10·9)/20 = 5 → 0.2 and 1.8."""
    z_a = np.r_[np.zeros(10), np.ones(10)][:, None]
    z_u = np.r_[np.zeros(10), np.ones(90)][:, None]
    w = propensity_weights(z_a, z_u, l2=0.0)
    np.testing.assert_allclose(w, np.r_[np.full(10, 0.2), np.full(10, 1.8)], rtol=1e-6)
    coef, intercept = fit_logistic(np.r_[z_a, z_u], np.r_[np.ones(20), np.zeros(100)], l2=0.0)
    assert intercept == pytest.approx(0.0, abs=1e-8)  # logit(0.5)
    assert coef[0] == pytest.approx(math.log(0.1 / 0.9), rel=1e-6)  # logit(0.1) − logit(0.5)
    # a penalty pulls the two cells together: weights less extreme, never reversed
    w1 = propensity_weights(z_a, z_u, l2=5.0)
    assert 0.2 < w1[0] < w1[-1] < 1.8
    # Kish's n_eff: (10·0.2 + 10·1.8)² / (10·0.04 + 10·3.24) = 400 / 32.8 = 12.195
    assert effective_size(w) == pytest.approx(400 / 32.8, rel=1e-6)
    assert effective_size(np.ones(7)) == 7 and effective_size(np.zeros(3)) == 0


def test_density_ratios_and_overlap_hand_computed():
    """The cells above: r = odds · N_a/N_u = 1·20/100 = 0.2 at z=0 and 9·20/100 = 1.8 at z=1, at the
    answered and at the never-queried situations alike. With max_ratio 1 the z=1 cell is outside the
    overlap: its never-queried situations are not corrected and its answered ones get weight 0."""
    z_a = np.r_[np.zeros(10), np.ones(10)][:, None]
    z_u = np.r_[np.zeros(10), np.ones(90)][:, None]
    r_a, r_u = density_ratios(z_a, z_u, l2=0.0)
    np.testing.assert_allclose(r_a, np.r_[np.full(10, 0.2), np.full(10, 1.8)], rtol=1e-6)
    np.testing.assert_allclose(r_u, np.r_[np.full(10, 0.2), np.full(90, 1.8)], rtol=1e-6)
    w, inside = overlap_weights(z_a, z_u, l2=0.0, max_ratio=1.0)
    np.testing.assert_allclose(w, np.r_[np.full(10, 0.2), np.zeros(10)], rtol=1e-6)
    np.testing.assert_array_equal(inside, np.arange(100) < 10)
    w9, inside9 = overlap_weights(z_a, z_u, l2=0.0, max_ratio=9.0)  # the default: both cells inside
    np.testing.assert_allclose(w9, r_a)
    assert inside9.all()
    assert overlap_weights(z_a, z_u, l2=0.0, max_ratio=None)[1].all()
    # a never-queried cell with no answered situation at all is outside (its ratio grows without bound)
    z_u2 = np.r_[z_u, np.full((50, 1), 5.0)]
    assert not overlap_weights(z_a, z_u2, l2=0.0)[1][-50:].any()


def test_propensity_weights_edge_cases():
    assert propensity_weights(np.zeros((0, 2)), np.ones((5, 2))).shape == (0,)
    np.testing.assert_array_equal(propensity_weights(np.ones((3, 2)), np.zeros((0, 2))), np.zeros(3))
    with pytest.raises(ValueError):
        fit_logistic(np.ones((4, 1)), np.ones(4))
    # a constant covariate is dropped, not a singular system; identical groups give equal weights
    z = np.c_[np.ones(40), np.tile([0.0, 1.0], 20)]
    np.testing.assert_allclose(propensity_weights(z, z), np.ones(40), rtol=1e-6)


def test_weighted_lowest_threshold_hand_computed():
    """10 hits at confidence 0.99 with weight 1, then 5 hits + 5 misses at 0.95 with weight 9 (the
    cells of the test above). At 0.99: p = 1, n_eff = 10, bound 10/(10 + z²) = 0.72247. Down to 0.95:
    p_w = (10 + 45)/(10 + 90) = 0.55, n_eff = 100²/(10 + 810) = 12.1951, z²/n = 0.315011,
    centre = 0.55 + 0.157506 = 0.707506, half = 1.96·√(0.55·0.45/12.1951 + z²/(4·12.1951²)) = 0.320584,
    bound = 0.386922 / 1.315011 = 0.29424. Unweighted the 0.95 set is 15 of 20: bound 0.53130.
    With target 0.5 the unweighted rule goes down to 0.95; the weighted one stops at 0.99."""
    logc = np.log(np.r_[np.full(10, 0.99), np.full(10, 0.95)])
    hit = np.r_[np.ones(15, bool), np.zeros(5, bool)]
    w = np.r_[np.ones(10), np.full(10, 9.0)]
    plain = lowest_threshold(logc, hit, target=0.5)
    assert plain.log_threshold == pytest.approx(math.log(0.95)) and plain.bound == pytest.approx(0.53130, abs=2e-4)
    assert plain.effective == 20
    weighted = lowest_threshold(logc, hit, target=0.5, weight=w)
    assert weighted.log_threshold == pytest.approx(math.log(0.99))
    assert (weighted.support, weighted.hits) == (10, 10)
    assert weighted.precision == 1.0 and weighted.effective == pytest.approx(10.0)
    assert weighted.bound == pytest.approx(10 / (10 + Z2), abs=2e-4)
    assert lowest_threshold(logc, hit, target=0.25, weight=w).bound == pytest.approx(0.29424, abs=2e-4)
    assert wilson_lower_bound(0.55 * 100 ** 2 / 820, 100 ** 2 / 820) == pytest.approx(0.29424, abs=2e-4)
    # weights of one scale do not matter; all-zero weights give no threshold
    assert lowest_threshold(logc, hit, target=0.25, weight=3 * w).bound == pytest.approx(0.29424, abs=2e-4)
    assert lowest_threshold(logc, hit, target=0.1, weight=np.zeros(20)) is None


def test_unit_weights_are_the_unweighted_rule():
    rng = np.random.default_rng(3)
    n, c = 400, 4
    pred = rng.integers(0, c, n)
    answer = np.where(rng.random(n) < 0.85, pred, rng.integers(0, c, n))
    previous = np.where(rng.random(n) < 0.8, (pred + 1) % c, pred)
    logc = np.log(rng.uniform(0.5, 1.0, n))
    a = calibrate_thresholds(pred, logc, answer, previous, c, target_precision=0.7)
    b = calibrate_thresholds(pred, logc, answer, previous, c, target_precision=0.7, weight=np.ones(n))
    for f in ("log_threshold", "source", "support", "hits", "precision", "bound", "effective", "effective_evidence"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), equal_nan=True)
    assert np.isfinite(a.log_threshold).any()
    np.testing.assert_array_equal(a.effective_evidence, a.evidence)
    # a class whose weighted evidence is thin is pooled although its count is large
    w = np.ones(n)
    w[pred == 0] = np.where(np.arange((pred == 0).sum()) == 0, 1e6, 1e-6)
    d = calibrate_thresholds(pred, logc, answer, previous, c, target_precision=0.7, min_class_evidence=30, weight=w)
    assert d.evidence[0] >= 30 and d.effective_evidence[0] < 2 and d.source[0] != 1


def test_shift_covariates_columns():
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    z = shift_covariates(np.log([0.9, 1.0]), np.array([1, 2]), np.array([0, 255]), prob, np.array([99, 0]), 3)
    assert z.shape == (2, 5 + 3 + 4)
    np.testing.assert_allclose(z[:, 0], [math.log(0.1), -30.0])  # log(1 − conf), clipped
    np.testing.assert_allclose(z[:, 1], [0.7, 0.0])  # model's probability of the label (0: unlabelled)
    np.testing.assert_allclose(z[:, 2], [0.2, 0.8])  # ... of ψ's class
    np.testing.assert_allclose(z[0, 3], -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)))
    np.testing.assert_allclose(z[:, 4], [math.log(100), 0.0])
    np.testing.assert_array_equal(z[:, 5:8], [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(z[:, 8:], [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_weighted_estimate_holds_for_the_never_queried_under_selection():
    """A population of situations where a score s makes both the hit (ψ right) and the query likelier,
    as acquisition does: P(hit | s) = σ(2s), P(queried | s) = σ(3s − 3). Among the queried the hit rate is
    far above the never-queried one; weighted by the propensity model on s, the answered masks estimate
    the never-queried rate, and its 95% bound is below it."""
    rng = np.random.default_rng(0)
    n = 20000
    s = rng.normal(0.0, 1.0, n)
    hit = rng.random(n) < 1 / (1 + np.exp(-2 * s))
    queried = rng.random(n) < 1 / (1 + np.exp(-(3 * s - 3)))
    truth = hit[~queried].mean()
    plain = hit[queried].mean()
    w = propensity_weights(s[queried, None], s[~queried, None], l2=0.0)
    est = float((w * hit[queried]).sum() / w.sum())
    n_eff = effective_size(w)
    assert plain - truth > 0.2  # the bias the weights must remove
    assert abs(est - truth) < 0.05 and n_eff < queried.sum()
    assert wilson_lower_bound(est * n_eff, n_eff) <= truth
    assert wilson_lower_bound(plain * queried.sum(), queried.sum()) > truth  # the unweighted bound fails
