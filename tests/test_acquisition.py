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


# ------------------------------------------------------------------ scatter rewrite vs the former implementation
def _reference_reduce_batch(probs, segment, labels, n_masks, *, counted=None, embedding=None,
                            need_entropy=False, need_margin=False):
    """The per-pixel × class implementation that ``reduce_batch`` replaced (kept verbatim as the reference).

    probs (N,C), segment (N,), labels (N,), embedding (N,E) per pixel.
    """
    dev = probs.device
    n, c = probs.shape
    k = n_masks
    inside = segment >= 0
    pix = torch.nonzero(inside, as_tuple=True)[0]
    seg = segment[pix]
    p = probs[pix].float()
    lab = labels[pix]
    pred = p.argmax(1)
    eff = torch.where(lab == 255, pred, lab)
    valid = lab != 255
    area = torch.bincount(seg, minlength=k)
    hist = torch.bincount(seg * c + pred, minlength=k * c).view(k, c)
    dominant = hist.argmax(1)
    mean_prob = torch.zeros(k, c, device=dev).index_add_(0, seg, p) / area.clamp(min=1).unsqueeze(1)
    in_mprime = pred == dominant[seg]
    f_mprime = torch.zeros(k, c, device=dev).index_add_(0, seg[in_mprime], p[in_mprime])
    f_mprime = f_mprime / f_mprime.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = (p * f_mprime[seg]).sum(1) / p.norm(dim=1).clamp(min=1e-12)
    cil = 1.0 - p.gather(1, eff.unsqueeze(1)).squeeze(1)
    sim_by_class = torch.zeros(k * c, device=dev, dtype=torch.float64)
    sim_by_class.index_add_(0, seg * c + eff, (cos * cil).double())
    cil_sum = torch.zeros(k, device=dev, dtype=torch.float64).index_add_(0, seg, cil.double())
    ent = mar = None
    if need_entropy:
        e = -(p * torch.log(p.clamp(min=1e-12))).sum(1)
        ent = torch.zeros(k, device=dev, dtype=torch.float64).index_add_(0, seg, e.double())
    if need_margin:
        top2 = p.topk(2, dim=1).values if c > 1 else torch.cat([p, torch.zeros_like(p)], 1)
        mg = 1.0 - (top2[:, 0] - top2[:, 1])
        mar = torch.zeros(k, device=dev, dtype=torch.float64).index_add_(0, seg, mg.double())
    key = torch.where(in_mprime, cos, torch.full_like(cos, -2.0))
    best = torch.full((k,), -3.0, device=dev).scatter_reduce(0, seg, key, reduce="amax")
    is_best = key == best[seg]
    rep = torch.full((k,), n, device=dev, dtype=torch.int64)
    rep.scatter_reduce_(0, seg[is_best], pix[is_best], reduce="amin")
    cmask = valid if counted is None else valid & counted[seg]
    counts = torch.bincount(lab[cmask], minlength=c)[:c]
    emb = None
    if embedding is not None:
        e = embedding[pix].float()
        emb = torch.zeros(k, e.shape[1], device=dev).index_add_(0, seg, e) / area.clamp(min=1).unsqueeze(1)
    return dict(area=area, dominant=dominant, mean_prob=mean_prob, sim_by_class=sim_by_class.view(k, c),
                cil=cil_sum, entropy=ent, margin=mar, rep_pixel=rep, counts=counts, embedding=emb)


def _random_batch(seed, *, b=3, c=6, h=14, w=18, masks_per_image=9, ties=False):
    g = torch.Generator().manual_seed(seed)
    if ties:  # pixels drawn from a few probability vectors, some with two equal top classes
        pool = torch.softmax(torch.randn(5, c, generator=g), 1)
        pool[0] = torch.full((c,), 1.0 / c)
        pool[1, :2] = pool[1, :2].mean()
        probs = pool[torch.randint(0, 5, (b, h, w), generator=g)].permute(0, 3, 1, 2).contiguous()
    else:
        probs = torch.softmax(2.5 * torch.randn(b, c, h, w, generator=g), 1)
    seg = torch.empty(b, h, w, dtype=torch.int64)
    for i in range(b):  # image i owns local ids [i·m, (i+1)·m); id i·m+m-1 is never used (an empty mask)
        s = torch.randint(0, masks_per_image - 1, (h, w), generator=g) + i * masks_per_image
        s[torch.rand(h, w, generator=g) < 0.15] = -1  # uncovered pixels
        seg[i] = s
    labels = torch.randint(0, c, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < 0.3] = 255  # void pixels: ŷ' falls back to the argmax
    counted = torch.rand(b * masks_per_image, generator=g) < 0.7
    emb = torch.randn(b, 4, h // 2, w // 2, generator=g)
    return probs, seg, labels, b * masks_per_image, counted, emb


@pytest.mark.parametrize("kernel", ["torch", "fused"])
@pytest.mark.parametrize("seed,ties,chunk,channels_last", [
    (0, False, None, False), (1, False, 37, True), (2, True, None, True), (3, True, 64, False), (5, True, 29, True)])
def test_reduce_batch_equals_the_former_per_pixel_implementation(seed, ties, chunk, channels_last, kernel):
    probs, seg, labels, k, counted, emb = _random_batch(seed, ties=ties)
    b, c, h, w = probs.shape
    x = probs.contiguous(memory_format=torch.channels_last) if channels_last else probs
    new = reduce_batch(x, seg, labels, k, counted=counted, embedding=emb, need_entropy=True, need_margin=True,
                       chunk=chunk, kernel=kernel)
    up = torch.nn.functional.interpolate(emb, size=(h, w), mode="bilinear", align_corners=False)
    ref = _reference_reduce_batch(
        probs.permute(0, 2, 3, 1).reshape(-1, c), seg.reshape(-1), labels.reshape(-1), k, counted=counted,
        embedding=up.permute(0, 2, 3, 1).reshape(-1, up.shape[1]), need_entropy=True, need_margin=True)
    for name in ("area", "dominant", "rep_pixel", "counts"):
        np.testing.assert_array_equal(getattr(new, name).numpy(), ref[name].numpy(), err_msg=name)
    for name in ("mean_prob", "sim_by_class", "cil", "entropy", "margin", "embedding"):
        np.testing.assert_allclose(getattr(new, name).numpy(), ref[name].numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
    assert (ref["area"] > 0).sum() < k  # the case has empty masks ...
    assert float(new.sim_by_class.abs().sum()) > 1.0  # ... and non-trivial sums


def test_reduce_batch_pixel_rows_and_image_planes_agree():
    # the (N,C) form (one image) and the (B,C,H,W) form of the same image give the same statistics
    probs, seg, labels, k, counted, _ = _random_batch(4, b=1)
    c = probs.shape[1]
    a = reduce_batch(probs, seg, labels, k, counted=counted, need_margin=True)
    b = reduce_batch(probs.permute(0, 2, 3, 1).reshape(-1, c), seg.reshape(-1), labels.reshape(-1), k,
                     counted=counted, need_margin=True)
    for name in ("area", "dominant", "rep_pixel", "counts", "mean_prob", "sim_by_class", "cil", "margin"):
        np.testing.assert_allclose(getattr(a, name).numpy(), getattr(b, name).numpy(), rtol=1e-6, atol=1e-6)
    # channels-last probabilities are read through the same path
    cl = reduce_batch(probs.contiguous(memory_format=torch.channels_last), seg, labels, k, counted=counted)
    np.testing.assert_array_equal(cl.rep_pixel.numpy(), a.rep_pixel.numpy())
    np.testing.assert_allclose(cl.sim_by_class.numpy(), a.sim_by_class.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kernel", ["torch", "fused"])
def test_reduce_batch_from_logits_applies_the_softmax_in_place(kernel):
    probs, seg, labels, k, counted, _ = _random_batch(6, c=7)
    logits = torch.log(probs) + torch.randn(probs.shape[0], 1, *probs.shape[2:])  # shift per pixel: same softmax
    for layout in (torch.contiguous_format, torch.channels_last):
        x = logits.clone(memory_format=layout)
        a = reduce_batch(x, seg, labels, k, counted=counted, logits=True, chunk=50, kernel=kernel)
        np.testing.assert_allclose(x.numpy(), probs.numpy(), rtol=1e-5, atol=1e-6)  # overwritten with the softmax
        b = reduce_batch(probs, seg, labels, k, counted=counted, kernel="torch")
        for name in ("area", "dominant", "counts"):
            np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
        for name in ("mean_prob", "sim_by_class", "cil"):
            np.testing.assert_allclose(getattr(a, name).numpy(), getattr(b, name).numpy(), rtol=1e-5, atol=1e-5)


def test_fused_and_torch_kernels_agree_on_a_larger_image():
    # 20 classes, 40 masks, 96×160 pixels over several blocks; logits given, as acquire passes them
    g = torch.Generator().manual_seed(11)
    c, h, w, k = 20, 96, 160, 40
    logits = (4 * torch.randn(1, c, h // 8, w // 8, generator=g))
    logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear").contiguous(
        memory_format=torch.channels_last)
    seg = torch.randint(0, k, (1, h // 16, w // 16), generator=g).repeat_interleave(16, 1).repeat_interleave(16, 2)
    seg[:, :8] = -1
    labels = torch.randint(0, c, (1, h, w), generator=g)
    labels[torch.rand(1, h, w, generator=g) < 0.25] = 255
    counted = torch.rand(k, generator=g) < 0.8
    out = {kern: reduce_batch(logits.clone(memory_format=torch.channels_last), seg, labels, k, counted=counted,
                              logits=True, chunk=1000, kernel=kern, need_margin=True) for kern in ("torch", "fused")}
    a, b = out["torch"], out["fused"]
    for name in ("area", "dominant", "counts", "rep_pixel"):
        np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy(), err_msg=name)
    for name in ("mean_prob", "sim_by_class", "cil", "margin"):
        np.testing.assert_allclose(getattr(a, name).double().numpy(), getattr(b, name).double().numpy(),
                                   rtol=1e-5, atol=1e-4, err_msg=name)
    assert (a.area > 0).sum() > 30 and float(b.sim_by_class.sum()) > 1.0


def test_unknown_kernel_is_refused():
    probs, seg, labels, k, counted, _ = _random_batch(0)
    with pytest.raises(ValueError, match="kernel"):
        reduce_batch(probs, seg, labels, k, kernel="cuda-graph")


def test_fused_kernel_refuses_out_of_range_ids_and_labels():
    # the compiled loops do not check bounds, so the arguments are checked before them
    probs, seg, labels, k, counted, _ = _random_batch(0)
    bad_seg = seg.clone()
    bad_seg[0, 0, 0] = k
    with pytest.raises(ValueError, match="segment ids"):
        reduce_batch(probs, bad_seg, labels, k, kernel="fused")
    bad_lab = labels.clone()
    bad_lab[0, 0, 0] = probs.shape[1]
    with pytest.raises(ValueError, match="labels"):
        reduce_batch(probs, seg, bad_lab, k, kernel="fused")


def test_nan_logits_do_not_crash_either_kernel_and_stay_in_their_mask():
    # a diverged model (bf16 overflow) can emit NaN: the torch kernel indexed class C for such a pixel
    probs, seg, labels, k, counted, _ = _random_batch(7, c=5)
    logits = torch.log(probs)
    logits[0, :, 3, 4] = float("nan")
    bad = int(seg[0, 3, 4])
    out = {kern: reduce_batch(logits.clone(), seg, labels, k, counted=counted, logits=True, kernel=kern)
           for kern in ("torch", "fused")}
    ok = reduce_batch(probs, seg, labels, k, counted=counted, kernel="torch")
    keep = torch.ones(k, dtype=torch.bool)
    if bad >= 0:
        keep[bad] = False
    for kern, a in out.items():
        np.testing.assert_array_equal(a.area.numpy(), ok.area.numpy(), err_msg=kern)
        np.testing.assert_allclose(a.sim_by_class[keep].numpy(), ok.sim_by_class[keep].numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=kern)
        if bad >= 0:
            assert not np.isfinite(a.cil[bad].item()), kern
    np.testing.assert_array_equal(out["torch"].dominant.numpy(), out["fused"].dominant.numpy())


def test_more_than_255_classes_use_the_torch_kernel():
    # the fused kernel keeps the argmax as uint8: class 256+ wrapped around silently
    g = torch.Generator().manual_seed(0)
    c = 300
    probs = torch.softmax(3 * torch.randn(1, c, 16, 16, generator=g), 1)
    seg = torch.randint(0, 4, (1, 16, 16), generator=g)
    labels = torch.full((1, 16, 16), 255)
    with pytest.raises(ValueError, match="255 classes"):
        reduce_batch(probs, seg, labels, 4, kernel="fused")
    a = reduce_batch(probs, seg, labels, 4)  # the default picks the torch kernel
    b = reduce_batch(probs, seg, labels, 4, kernel="torch")
    np.testing.assert_array_equal(a.sim_by_class.numpy(), b.sim_by_class.numpy())


# ------------------------------------------------------------------ the torch kernel: crafted cases, memory
def _crafted_batch():
    """Two 6×8 images, 4 classes, 10 masks: exact ties, empty masks, void and uncovered pixels.

    Image 0 holds masks 0–4, image 1 masks 5–9. Mask 3 and mask 9 are empty. Mask 0 is
    all one probability vector (every pixel ties on the cosine: its representative is its
    first pixel); mask 1's pixels tie between classes 0 and 1 (argmax: class 0); mask 6 has
    as many pixels predicting class 1 as class 2 (D_θ: class 1) and a uniform pixel (a
    4-way tie: class 0); mask 7 is void-labelled throughout (ŷ′ = argmax); mask 8 is not
    counted.
    """
    c, h, w = 4, 6, 8
    u = [0.25, 0.25, 0.25, 0.25]
    t01 = [0.4, 0.4, 0.1, 0.1]
    a1 = [0.1, 0.6, 0.2, 0.1]
    a2 = [0.1, 0.2, 0.6, 0.1]
    a3 = [0.05, 0.05, 0.1, 0.8]
    a0 = [0.7, 0.1, 0.1, 0.1]
    probs = torch.zeros(2, h, w, c)
    seg = torch.full((2, h, w), -1, dtype=torch.int64)
    labels = torch.full((2, h, w), 255, dtype=torch.int64)
    # image 0
    seg[0, 0:2, 0:4], probs[0, 0:2, 0:4] = 0, torch.tensor(a3)
    seg[0, 2:4, 0:4], probs[0, 2:4, 0:4] = 1, torch.tensor(t01)
    probs[0, 3, 3] = torch.tensor(a0)
    seg[0, 0:4, 4:8] = 2
    probs[0, 0:4, 4:8] = torch.tensor(a1)
    probs[0, 0:2, 4:6] = torch.tensor(a2)
    probs[0, 4:6] = torch.tensor(u)  # uncovered rows
    labels[0, 0:2, 0:2], labels[0, 2:4, 0:3], labels[0, 1:3, 5:8] = 3, 1, 2
    # image 1
    seg[1, 0:3, 0:4] = 5
    probs[1, 0:3, 0:4] = torch.tensor(a0)
    probs[1, 0, 0] = torch.tensor(t01)
    seg[1, 0:3, 4:8] = 6
    probs[1, 0:3, 4:6] = torch.tensor(a1)
    probs[1, 0:3, 6:8] = torch.tensor(a2)
    probs[1, 2, 7] = torch.tensor(u)
    seg[1, 3:6, 0:4], probs[1, 3:6, 0:4] = 7, torch.tensor(a3)
    probs[1, 4, 2] = torch.tensor(a1)
    seg[1, 3:6, 4:7], probs[1, 3:6, 4:7] = 8, torch.tensor(t01)
    probs[1, 3:6, 7] = torch.tensor(a2)  # uncovered column
    labels[1, 0:3, 0:8:2], labels[1, 3:6, 4:6] = 0, 2
    counted = torch.tensor([True] * 8 + [False, True])
    return probs.permute(0, 3, 1, 2).contiguous(), seg, labels, 10, counted


@pytest.mark.parametrize("layout,dtype,as_logits", [
    (torch.contiguous_format, torch.float32, False), (torch.channels_last, torch.float32, False),
    (torch.channels_last, torch.float32, True), (torch.contiguous_format, torch.float32, True),
    (torch.channels_last, torch.bfloat16, True), (torch.contiguous_format, torch.float64, False)])
@pytest.mark.parametrize("chunk", [None, 1, 5, 7, 48])
def test_torch_and_fused_kernels_agree_on_crafted_ties_empty_masks_and_void(layout, dtype, as_logits, chunk):
    probs, seg, labels, k, counted = _crafted_batch()
    x = (torch.log(probs) if as_logits else probs).to(dtype).contiguous(memory_format=layout)
    inputs = {kern: x.clone(memory_format=layout) for kern in ("torch", "fused")}
    out = {kern: reduce_batch(inputs[kern], seg, labels, k, counted=counted, logits=as_logits, chunk=chunk,
                              kernel=kern, need_entropy=True, need_margin=True) for kern in inputs}
    a, b = out["torch"], out["fused"]
    for name in ("area", "dominant", "counts", "rep_pixel"):
        np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy(), err_msg=name)
    for name in ("mean_prob", "sim_by_class", "cil", "entropy", "margin"):
        np.testing.assert_allclose(getattr(a, name).double().numpy(), getattr(b, name).double().numpy(),
                                   rtol=2e-5, atol=2e-5, err_msg=name)
    # the cases the batch was built for, by hand
    n_total = 2 * 6 * 8
    np.testing.assert_array_equal(a.area.numpy(), [8, 8, 16, 0, 0, 12, 12, 12, 9, 0])
    np.testing.assert_array_equal(a.dominant.numpy()[[0, 1, 2, 5, 6, 7, 8]], [3, 0, 1, 0, 1, 3, 0])
    # ties: mask 0 is one vector throughout → its first pixel; mask 1's m′ (class 0) ties too → its first pixel
    assert a.rep_pixel[0] == 0 and a.rep_pixel[1] == 2 * 8
    # empty masks: nothing summed, no representative
    for m in (3, 4, 9):
        assert a.rep_pixel[m] == n_total and float(a.mean_prob[m].abs().sum()) == 0.0
        assert float(a.sim_by_class[m].abs().sum()) == 0.0 and float(a.cil[m]) == 0.0
    # void-labelled mask 7: ŷ′ = argmax, so a_CIL = 1 − max p and S[7] is all in the argmax classes
    assert float(a.sim_by_class[7, [0, 2]].abs().sum()) == 0.0 and float(a.sim_by_class[7, 3]) > 0
    assert float(a.cil[7]) == pytest.approx(11 * 0.2 + 0.4, rel=1e-2 if dtype == torch.bfloat16 else 1e-5)
    # counts: valid labels of counted masks (mask 8's two labelled columns do not count; uncovered never)
    valid = (labels != 255) & (seg >= 0) & (seg != 8)
    np.testing.assert_array_equal(a.counts.numpy(), np.bincount(labels[valid].numpy(), minlength=4))
    # and both equal the former per-pixel implementation on the same probabilities
    p_ref = torch.softmax(x.float(), 1) if as_logits else x.float()
    ref = _reference_reduce_batch(p_ref.permute(0, 2, 3, 1).reshape(-1, 4), seg.reshape(-1), labels.reshape(-1), k,
                                  counted=counted, need_entropy=True, need_margin=True)
    for name in ("area", "dominant", "rep_pixel", "counts"):
        np.testing.assert_array_equal(getattr(a, name).numpy(), ref[name].numpy(), err_msg=name)
    for name in ("mean_prob", "sim_by_class", "cil", "entropy", "margin"):
        np.testing.assert_allclose(getattr(a, name).double().numpy(), ref[name].double().numpy(), rtol=2e-5,
                                   atol=2e-5, err_msg=name)
    for kern, xi in inputs.items():  # only float32 logits are overwritten, by their softmax
        if dtype == torch.float32 and as_logits:
            np.testing.assert_allclose(xi.numpy(), probs.numpy(), rtol=1e-5, atol=1e-6, err_msg=kern)
        else:
            assert torch.equal(xi, x), kern


def test_torch_kernel_allocates_no_pixels_by_classes_array():
    # bf16 channels-last logits, as an autocast forward on CUDA returns them: per op, nothing larger than a
    # (C, chunk) block or a per-pixel vector is allocated (the former kernel copied the image to float32,
    # then gathered f(m′) per pixel: pixels × classes arrays)
    g = torch.Generator().manual_seed(3)
    c, h, w, k, chunk = 19, 128, 256, 40, 2048
    x = (3 * torch.randn(1, c, h, w, generator=g)).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    seg = torch.randint(-1, k, (1, h, w), generator=g)
    labels = torch.randint(0, c, (1, h, w), generator=g)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        b = reduce_batch(x, seg, labels, k, logits=True, chunk=chunk, kernel="torch", need_entropy=True,
                         need_margin=True)
    largest = max(e.cpu_memory_usage for e in prof.events())
    bound = max(4 * c * chunk, 8 * h * w)  # a float32 (C, chunk) block; an int64 per-pixel vector
    assert 0 < largest <= bound < 2 * c * h * w  # a bf16 copy of the image would not fit
    assert int(b.area.sum()) == int((seg >= 0).sum())
