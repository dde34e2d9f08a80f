"""Acquisition (paper Eq. 7–13) against hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from a2lc_cli.acquisition import (
    MaskStats,
    adaptive_class_weights,
    compute_scores,
    reduce_batch,
    select_top,
)


def test_class_weights_hand_computed():
    # N_c over unqueried pixels; class 2 absent; |C| = 4 (all classes, Eq. 8)
    w, kl, rarity = adaptive_class_weights(np.array([100, 10, 0, 50]), uniform="all")
    p = [100 / 160, 10 / 160, 50 / 160]
    kl_hand = sum(pi * math.log(pi * 4) for pi in p)
    assert kl == pytest.approx(kl_hand, rel=1e-12)
    assert kl == pytest.approx(0.555771, abs=1e-6)
    # Eq. 7: ŵ = min N / N_c; the rarest present class gets 1, absent classes 0
    np.testing.assert_allclose(rarity, [0.1, 1.0, 0.0, 0.2])
    # Eq. 9: w = ŵ^(KL³)
    np.testing.assert_allclose(w, [0.1 ** kl_hand**3, 1.0, 0.0, 0.2 ** kl_hand**3], rtol=1e-12)
    np.testing.assert_allclose(w, [0.673493, 1.0, 0.0, 0.758595], atol=1e-6)


def test_class_weights_balanced_dataset_is_neutral():
    # a uniform distribution has KL = 0, so every present class gets weight ŵ^0 = 1
    w, kl, _ = adaptive_class_weights(np.array([7, 7, 7]))
    assert kl == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(w, [1, 1, 1])


def test_class_weights_stronger_imbalance_amplifies_rarity():
    mild, kl_mild, _ = adaptive_class_weights(np.array([60, 40]))
    strong, kl_strong, _ = adaptive_class_weights(np.array([990, 10]))
    assert kl_strong > kl_mild
    # the head class is damped much more under strong imbalance
    assert strong[0] < mild[0] < 1
    assert strong[1] == mild[1] == 1


# Six pixels, two classes, two masks (x5 uncovered). Worked by hand below.
PROBS = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8], [0.5, 0.5]]
SEG = [0, 0, 0, 1, 1, -1]
LABELS = [0, 1, 0, 1, 255, 0]


def _stats(counted=None, **kw):
    return reduce_batch(
        torch.tensor(PROBS), torch.tensor(SEG), torch.tensor(LABELS), 2,
        counted=None if counted is None else torch.tensor(counted), need_entropy=True, need_margin=True, **kw,
    )


def test_reduce_batch_hand_computed():
    b = _stats()
    np.testing.assert_array_equal(b.area.numpy(), [3, 2])
    # D_θ(m): argmax classes 0,0,1 → 0; 1,1 → 1
    np.testing.assert_array_equal(b.dominant.numpy(), [0, 1])
    np.testing.assert_allclose(b.mean_prob.numpy(), [[2 / 3, 1 / 3], [0.3, 0.7]], atol=1e-6)
    # mask 0: m' = {x0, x1}, f(m') = (0.85, 0.15); cos = 0.997952, 0.997530, 0.547659
    # a_CIL = 1 − p(ŷ): 0.1, 0.8, 0.7  → S[0,0] = .997952·.1 + .547659·.7, S[0,1] = .997530·.8
    # mask 1: m' = {x3, x4}, f(m') = (0.3, 0.7); cos = 0.983282, 0.987241
    # x4 is void → ŷ' = argmax = 1, a_CIL = 0.2 → S[1,1] = .983282·.4 + .987241·.2
    np.testing.assert_allclose(b.sim_by_class.numpy(), [[0.483157, 0.798024], [0.0, 0.590761]], atol=2e-6)
    np.testing.assert_allclose(b.cil.numpy(), [1.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(b.margin.numpy(), [1.2, 1.2], atol=1e-6)
    ent = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    np.testing.assert_allclose(b.entropy.numpy(), [ent(PROBS[0]) + ent(PROBS[1]) + ent(PROBS[2]),
                                                  ent(PROBS[3]) + ent(PROBS[4])], atol=1e-6)
    # representative pixel: the m' pixel most similar to f(m')
    np.testing.assert_array_equal(b.rep_pixel.numpy(), [0, 4])
    # class counts: valid labels of covered pixels (void and uncovered excluded)
    np.testing.assert_array_equal(b.counts.numpy(), [2, 2])


def test_scores_abc_vs_sim_and_queried_exclusion():
    stats = MaskStats(2, 2)
    # mask 1 was queried in an earlier round: its pixels no longer count (non-redundant correction)
    stats.put(0, _stats(counted=[True, False]), np.zeros(2, np.int64))
    np.testing.assert_array_equal(stats.counts, [2, 1])
    queried = np.array([False, True])
    abc, info = compute_scores("abc", stats, queried=queried)
    kl = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    assert info["kl"] == pytest.approx(kl)
    w0 = 0.5 ** kl**3
    assert abc[0] == pytest.approx(w0 * 0.483157 + 0.798024, abs=3e-6)
    assert abc[1] == -np.inf
    sim, _ = compute_scores("sim", stats, queried=queried)
    assert sim[0] == pytest.approx(0.483157 + 0.798024, abs=3e-6)
    assert abc[0] < sim[0]  # the head class (0) is damped, the rare class (1) is not


def test_sum_not_mean_large_masks_rank_higher():
    # two masks with identical per-pixel statistics, one twice as large
    probs = torch.tensor([[0.6, 0.4]] * 3)
    b = reduce_batch(probs, torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]), 2)
    stats = MaskStats(2, 2)
    stats.put(0, b, np.zeros(2, np.int64))
    s, _ = compute_scores("abc", stats, queried=np.zeros(2, bool))
    assert s[1] == pytest.approx(2 * s[0])


def test_select_top_is_global_and_skips_excluded():
    scores = np.array([0.5, -np.inf, 2.0, 0.5, 1.0])
    np.testing.assert_array_equal(select_top(scores, 3), [2, 4, 0])  # tie 0.5: smaller id first
    np.testing.assert_array_equal(select_top(scores, 10), [2, 4, 0, 3])
    assert select_top(scores, 0).size == 0


def test_random_is_seeded():
    stats = MaskStats(5, 2)
    a, _ = compute_scores("random", stats, queried=np.zeros(5, bool), seed=3)
    b, _ = compute_scores("random", stats, queried=np.zeros(5, bool), seed=3)
    c, _ = compute_scores("random", stats, queried=np.zeros(5, bool), seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
