"""Label correction module (paper Eq. 1–6) on crafted features and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from a2lc_cli.errors import A2LCError
from a2lc_cli.lcm import (
    LCMNet,
    class_loss_weights,
    predict_confidence,
    select_corrections,
    tail_classes,
    train_lcm,
)


def test_class_loss_weights_eq2():
    # N = 10 answers: class 0 ×6, class 1 ×3, class 2 ×1, class 3 absent
    lam = class_loss_weights(np.array([0] * 6 + [1] * 3 + [2]), 4)
    inv = np.array([10 / 6, 10 / 3, 10 / 1, 0.0])
    np.testing.assert_allclose(lam, inv / inv.sum())
    assert lam[3] == 0 and lam.sum() == pytest.approx(1.0)
    assert lam[2] > lam[1] > lam[0]


def test_architecture_is_in_256_128_64_c():
    net = LCMNet(19, 19)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(19, 256), (256, 128), (128, 64), (64, 19)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 3


def test_tail_and_rarest_from_answer_counts():
    # 6 classes, α = 0.5 → ⌈3⌉ = 3 tail classes; zero-count classes first (ties by index)
    counts = np.array([50, 0, 7, 3, 0, 20])
    tail, rarest = tail_classes(counts, 0.5, size="ceil")
    np.testing.assert_array_equal(tail, [1, 3, 4])
    assert rarest == 1
    # ⌈α·|C|⌉ rounds up: α = 0.4 of 6 → 3 classes; the default ⌊α·|C|⌋ (authors' code) → 2
    assert len(tail_classes(counts, 0.4, size="ceil")[0]) == 3
    assert len(tail_classes(counts, 0.4)[0]) == 2
    assert len(tail_classes(counts, 0.0)[0]) == 0


def test_four_criteria_each_blocks_a_correction():
    tau = 0.99
    tail = np.array([3])
    rarest = 2
    # mask:            ok     low-conf  tail-pred  rarest-cur same   queried
    pred = np.array([1, 1, 3, 1, 0, 1])
    cur = np.array([0, 0, 0, 2, 0, 0])
    conf = np.array([0.995, 0.98, 0.999, 0.999, 0.999, 0.999])
    eligible = np.array([True, True, True, True, True, False])
    chosen = select_corrections(pred, np.log(conf), cur, eligible, tau=tau, tail=tail, rarest=rarest)
    np.testing.assert_array_equal(chosen, [True, False, False, False, False, False])


def test_tau_near_one_is_resolved_in_float64():
    # logit gaps of 16 and 17: the true confidences are 1 − e^-16 ≈ 0.99999989 < τ = 0.9999999
    # and 1 − e^-17 ≈ 0.99999996 > τ; in float32 both pass (τ itself rounds to 0.99999988)
    net = LCMNet(2, 2, hidden=(2,))
    with torch.no_grad():
        net.net[0].weight.copy_(torch.eye(2))
        net.net[0].bias.zero_()
        net.net[2].weight.copy_(torch.eye(2))
        net.net[2].bias.zero_()
    feats = np.array([[16.0, 0.0], [17.0, 0.0]], np.float32)
    p32 = torch.softmax(torch.tensor(feats), 1)[:, 0].numpy()
    assert (p32 >= np.float32(0.9999999)).all()  # float32 cannot tell them apart
    pred, logc = predict_confidence(net, feats)
    np.testing.assert_array_equal(pred, [0, 0])
    tau = 0.9999999
    assert logc[0] < math.log(tau) <= logc[1]
    chosen = select_corrections(pred, logc, np.array([1, 1]), np.array([True, True]), tau=tau,
                                tail=np.array([], np.int64), rarest=5)
    np.testing.assert_array_equal(chosen, [False, True])


def test_training_learns_separable_features():
    rng = np.random.default_rng(0)
    centers = np.eye(4, dtype=np.float32)
    y = rng.integers(0, 4, 200)
    x = centers[y] * 0.8 + 0.05 + rng.normal(0, 0.03, (200, 4)).astype(np.float32)
    model, log = train_lcm(x, y, 4, epochs=30, batch_size=8, lr=1e-3, seed=0)
    assert log["loss"][-1] < log["loss"][0]
    assert log["train_accuracy"] > 0.95
    pred, _ = predict_confidence(model, x)
    assert (pred == y).mean() > 0.95


def test_training_is_deterministic_by_seed():
    x = np.random.default_rng(1).random((40, 3)).astype(np.float32)
    y = np.arange(40) % 3
    m1, _ = train_lcm(x, y, 3, epochs=3, seed=7)
    m2, _ = train_lcm(x, y, 3, epochs=3, seed=7)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_min_steps_raises_the_epochs_and_sharpens_confidence():
    """20 samples at batch 8 are 3 steps an epoch: min_steps=300 means 100 epochs instead of 5, and the
    longer-trained ψ is more confident on the same data (what τ is compared with, Eq. 4)."""
    rng = np.random.default_rng(2)
    y = np.arange(20) % 2
    x = (np.eye(2, dtype=np.float32)[y] * 0.6 + 0.2 + rng.normal(0, 0.02, (20, 2))).astype(np.float32)
    short, log_s = train_lcm(x, y, 2, epochs=5, batch_size=8, lr=1e-3, seed=0)
    long, log_l = train_lcm(x, y, 2, epochs=5, batch_size=8, lr=1e-3, seed=0, min_steps=300)
    assert (log_s["epochs"], log_s["steps"]) == (5, 15)
    assert (log_l["epochs"], log_l["steps"]) == (100, 300)
    assert len(log_l["loss"]) == 100
    _, conf_s = predict_confidence(short, x)
    _, conf_l = predict_confidence(long, x)
    assert conf_l.mean() > conf_s.mean()


def test_no_answers_is_a_clear_error():
    with pytest.raises(A2LCError, match="no non-void answers"):
        train_lcm(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 3)
