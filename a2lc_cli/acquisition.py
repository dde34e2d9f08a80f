"""Acquisition: score every correction unit (mask) with θ_{r-1} in one streaming pass.

The adaptively balanced acquisition (ABC, paper Eq. 7–12) and the baselines of
paper Table 4 (SIM, CIL, entropy, margin, random) are all computed from per-mask
reductions of per-pixel quantities. The reductions are scatter-adds over the
global mask ids of a batch of images, on the model's device; no per-pixel
probability map leaves the batch.

Pixel-level notation (one batch, N pixels, C classes, k masks):
    P (N,C)       softmax probabilities f_θ(x) (the default feature)
    ŷ (N,)        current label, 255 = void
    ŷ' (N,)       effective label: ŷ where valid, else the model's argmax
    a_CIL (N,)    1 − P[x, ŷ'(x)]                                      (Eq. 10)
    m' ⊂ m        pixels whose argmax is the mask's dominant argmax class
    cos (N,)      cos(f(x), f(m')) with f(m') the mean P over m'
The ABC score of a mask is Σ_{x∈m} cos(x) · w(ŷ'(x)) · a_CIL(x) (Eq. 11–12) with the
adaptive class weight w (Eq. 7–9) computed from the label counts of the pixels
of not-yet-queried masks. Because w depends only on the class, the pass
accumulates S[m,c] = Σ_{x∈m, ŷ'(x)=c} cos(x)·a_CIL(x) and the weights are applied
once all counts are known: a_ABC(m) = Σ_c w_c S[m,c], a_SIM(m) = Σ_c S[m,c].
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.base import VOID

ACQUISITIONS: dict[str, str] = {
    "abc": "Adaptively balanced CIL, Σ cos·w·(1−p(ŷ)) over the mask (paper Eq. 7–12)",
    "sim": "SIM (ALC baseline), Σ cos·(1−p(ŷ)) over the mask (Eq. 12 without w)",
    "cil": "confidence in label, Σ (1−p(ŷ)) over the mask",
    "entropy": "predictive entropy, Σ −Σ_c p log p over the mask",
    "margin": "best-vs-second-best margin, Σ (1 − (p₁ − p₂)) over the mask",
    "random": "uniform random score per mask (seeded)",
}


# --------------------------------------------------------------------------- Eq. 7–9
KL_UNIFORM = ("present", "all")


def adaptive_class_weights(counts: np.ndarray, *, uniform: str = "present") -> tuple[np.ndarray, float, np.ndarray]:
    """Adaptive class weight w_c of Eq. 9 from per-class pixel counts.

    counts: (C,) pixel counts N_c of each class over the pixels of masks not yet
        queried (valid labels only).
    uniform: the reference distribution of Eq. 8's KL: "present" = uniform over the
        K classes with N_c > 0 (the authors' code, config ``method.kl_uniform``), "all" =
        uniform over all C classes (the paper's text). Equal while every class is present.
    Returns (w (C,) float64, KL (float), ŵ (C,) float64):
        ŵ_c = min_{c' present} N_{c'} / N_c (Eq. 7; 0 for absent classes);
        KL = Σ_c P(c) log(P(c)·K) with P(c) = N_c / Σ N, K = |present| or |C|
             (Eq. 8; absent classes add 0);
        w_c = ŵ_c ^ (KL³) (Eq. 9; 0 for absent classes).
    Raises ValueError for an unknown ``uniform``.
    """
    if uniform not in KL_UNIFORM:
        raise ValueError(f"unknown KL reference {uniform!r} (choose from {', '.join(KL_UNIFORM)})")
    counts = np.asarray(counts, dtype=np.float64)
    c = counts.shape[0]
    present = counts > 0
    rarity = np.zeros(c)
    if not present.any():
        return np.zeros(c), 0.0, rarity
    rarity[present] = counts[present].min() / counts[present]
    p = counts[present] / counts.sum()
    k = int(present.sum()) if uniform == "present" else c
    kl = float(np.sum(p * np.log(p * k)))
    w = np.zeros(c)
    w[present] = rarity[present] ** (kl**3)
    return w, kl, rarity


# --------------------------------------------------------------------------- per-batch reductions
@dataclass
class BatchStats:
    """Per-mask reductions of one batch; arrays cover the batch's k masks (local ids 0..k-1).

    area: (k,) pixel count.  dominant: (k,) D_θ(m), the most frequent argmax class.
    mean_prob: (k,C) mean softmax over the mask (Eq. 1 with the softmax feature).
    embedding: (k,E) mean decoder embedding over the mask, or None.
    sim_by_class: (k,C) S[m,c] = Σ_{x∈m, ŷ'(x)=c} cos(x)·a_CIL(x).
    cil: (k,) Σ a_CIL.  entropy: (k,) Σ entropy.  margin: (k,) Σ (1 − (p₁−p₂)).
    rep_pixel: (k,) flat index (within the batch) of the pixel of m' most similar to f(m').
    counts: (C,) label counts of valid-labelled pixels in masks flagged as counted.
    """

    area: torch.Tensor
    dominant: torch.Tensor
    mean_prob: torch.Tensor
    sim_by_class: torch.Tensor
    cil: torch.Tensor
    entropy: torch.Tensor | None
    margin: torch.Tensor | None
    rep_pixel: torch.Tensor
    counts: torch.Tensor
    embedding: torch.Tensor | None = None


PIXEL_CHUNK = 1 << 15  # pixels per step on the CPU: a (C, chunk) block of probabilities stays in cache
# pixels per step on CUDA: fewer, larger launches; (C, chunk) float32 temporaries of 40 MB at 19 classes, 4 blocks
# per 1024×2048 image (docs/performance.md: the choice, and `bench/acquire_speed.py --kernel-memory` to remeasure it)
CUDA_PIXEL_CHUNK = 1 << 19


def reduce_batch(
    probs: torch.Tensor,
    segment: torch.Tensor,
    labels: torch.Tensor,
    n_masks: int,
    *,
    counted: torch.Tensor | None = None,
    embedding: torch.Tensor | None = None,
    need_entropy: bool = False,
    need_margin: bool = False,
    chunk: int | None = None,
    logits: bool = False,
    kernel: str | None = None,
) -> BatchStats:
    """Reduce per-pixel model outputs to per-mask statistics with scatter operations.

    probs: (B,C,H,W) float softmax probabilities of B images, NCHW or channels-last, or
        (N,C) for N pixels of one image.
    segment: (B,H,W) or (N,) int64 local mask id in [0, n_masks), or -1 for pixels no
        mask covers; a mask's pixels lie in one image.
    labels: same shape as ``segment``, int64 current labels ŷ (255 = void).
    counted: (n_masks,) bool, masks whose pixels count towards the class counts of
        Eq. 7–8 (the not-yet-queried masks); all masks when None.
    embedding: optional decoder embedding for the LCM feature: (B,E,h,w) at any
        resolution (bilinearly upsampled to (H,W) a few channels at a time), or (N,E)
        with (N,C) probabilities.
    chunk: pixels per step (default: ``PIXEL_CHUNK`` on the CPU, ``CUDA_PIXEL_CHUNK`` on CUDA).
    logits: ``probs`` holds logits: the softmax over classes is taken block by block in
        pass 1 and, for float32 ``probs``, written over them (``probs`` then holds the
        probabilities afterwards), so no second (B,C,H,W) array is allocated; other dtypes
        (bf16 logits of an autocast forward) are left as they are.
    Returns the per-mask sums of :class:`BatchStats`; ``rep_pixel`` is a flat index over
    the batch's B·H·W pixels.
    Raises ValueError for an unknown ``kernel``, and (fused kernel) for segment ids or
    labels out of range or more than 255 classes.

    Nothing of size pixels × classes is allocated besides ``probs``: temporaries are
    (C, chunk) blocks and per-pixel vectors. Each image is read twice, a block at a time:
    pass 1 takes the argmax, a_CIL and, by one ``index_add_`` keyed by (mask, argmax
    class), Σ p over the pixels of each mask predicting each class — which gives both
    Σ_m p (Eq. 1) and, once D_θ(m) is known, f(m′); pass 2 takes
    cos(f(x), f(m′)) = p(x)·f̂(m′)/|p(x)| for the sums of Eq. 11–12 and the
    representative pixel. Pixels no mask covers go to a spare bin k.

    kernel: "fused" (the default on the CPU when numba is installed): the two passes
    as compiled loops over the pixels (:func:`_fused_reduce`), each pixel's C values read
    once per pass with the softmax, argmax, a_CIL, |p| and the per-mask sums done on them
    in registers (2.5× faster at 1024×2048, docs/performance.md); "torch": the two passes
    as torch ops over whole blocks (:func:`_torch_reduce`; always used on CUDA). Both agree
    to float rounding (tests/test_acquisition.py).
    """
    if kernel is None:
        kernel = ("fused" if probs.device.type == "cpu" and probs.shape[1] <= 255 and _fused_kernels() is not None
                  else "torch")
    if kernel == "fused":
        return _fused_reduce(probs, segment, labels, n_masks, counted=counted, embedding=embedding,
                             need_entropy=need_entropy, need_margin=need_margin, chunk=chunk, logits=logits)
    if kernel != "torch":
        raise ValueError(f"unknown kernel {kernel!r} (fused or torch)")
    return _torch_reduce(probs, segment, labels, n_masks, counted=counted, embedding=embedding,
                         need_entropy=need_entropy, need_margin=need_margin, chunk=chunk, logits=logits)


_LOW32 = 0xFFFFFFFF


def _ordered_bits(v: float) -> int:
    """The int32 of the same order as the float32 ``v`` (as :func:`_rep_key` maps keys)."""
    bits = struct.unpack("<i", struct.pack("<f", v))[0]
    return bits if bits >= 0 else bits ^ 0x7FFFFFFF


# representative-pixel key of a mask before any pixel (cosine −3): pixels outside m′ rank at −2, NaN at −4
_NO_REP = _ordered_bits(-3.0) << 32


def _rep_key(kc: torch.Tensor, x_low: torch.Tensor) -> torch.Tensor:
    """One int64 per pixel ordered as (key, −pixel): its maximum over a mask is the first pixel of largest key.

    kc: (n,) float32 keys (no NaN); x_low: (n,) int64 2³²−1 − the pixel's index in its image.
    The float's bits are mapped to an int32 of the same order (negative floats: the magnitude
    bits flipped) and put in the high 32 bits, so one ``scatter_reduce_(amax)`` finds both the
    largest key and, among equal keys, the smallest pixel index (no per-pixel key array, no
    ``nonzero``, no host synchronisation).
    """
    bits = kc.view(torch.int32)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).long()
    return ordered.mul_(1 << 32).add_(x_low)


def _torch_reduce(probs, segment, labels, n_masks, *, counted, embedding, need_entropy, need_margin, chunk,
                  logits) -> BatchStats:
    """:func:`reduce_batch` as torch ops, on any device (CUDA's kernel; the CPU's when numba is absent).

    Per image two passes over blocks of ``chunk`` pixels (default ``PIXEL_CHUNK`` on the CPU,
    ``CUDA_PIXEL_CHUNK`` on CUDA). Each block is read as (C, chunk) float32 planes of
    probabilities: a view of ``probs`` when it is float32 and planar, else a copy into one
    reused (C, chunk) buffer; float32 logits get their softmax written over them in pass 1
    (pass 2 reads the probabilities), other dtypes (bf16 logits of an autocast forward) are
    converted block by block and their softmax is taken again in pass 2, so no float32 copy
    of the whole batch exists. Every per-pixel quantity is a (chunk,) vector; the per-mask
    sums are ``index_add_`` / ``scatter_reduce_`` into (k+1)·C bins; the cosine's
    p(x)·f̂(m′) is Σ_j p_j(x)·f̂_j(m′) over the classes (a loop of C steps over whole
    planes, each gathering one (chunk,) vector of f̂_j), never a per-pixel gather of
    f̂(m′). Temporaries: O(chunk·C) for the block, the softmax, the argmax (and the margin
    baseline's second-best), O(chunk) for the rest, O(n) per image for the argmax and a_CIL
    (uint8 and float32; and the mask ids when an embedding is summed). No host
    synchronisation inside (no ``bincount``, ``nonzero`` or boolean indexing), so on CUDA the
    launches run ahead of the device.
    """
    planes, seg_img, lab_img, emb_img = _image_planes(probs, segment, labels, embedding)
    dev = probs.device
    c = planes[0].shape[0]
    k = n_masks
    kk = k + 1  # bin k: pixels outside every mask
    area = torch.zeros(kk, device=dev, dtype=torch.int64)
    hist = torch.zeros(kk * c, device=dev, dtype=torch.int64)
    # psum[:, m·C + j] = Σ p over the pixels of mask m whose argmax class is j
    psum = torch.zeros(c, kk * c, device=dev)
    sim_by_class = torch.zeros(kk * c, device=dev, dtype=torch.float64)
    cil_sum = torch.zeros(kk, device=dev, dtype=torch.float64)
    ent = torch.zeros(kk, device=dev, dtype=torch.float64) if need_entropy else None
    mar = torch.zeros(kk, device=dev, dtype=torch.float64) if need_margin else None
    n_total = sum(int(p.shape[1]) for p in planes)
    rep = torch.full((kk,), n_total, device=dev, dtype=torch.int64)
    counts = torch.zeros(c + 1, device=dev, dtype=torch.int64)  # bin c: pixels that do not count
    counted_k = torch.zeros(kk, device=dev, dtype=torch.bool)
    if counted is None:
        counted_k[:k] = True
    else:
        counted_k[:k] = counted.to(dev, torch.bool)
    desc = torch.arange(c, 0, -1, device=dev, dtype=torch.uint8 if c < 256 else torch.int32).unsqueeze(1)
    n_max = max(int(p.shape[1]) for p in planes)
    if n_max > _LOW32:
        raise ValueError(f"an image of {n_max} pixels is larger than the kernel's 2**32 − 1")
    step = max(1, min(chunk or (CUDA_PIXEL_CHUNK if dev.type == "cuda" else PIXEL_CHUNK), n_max))
    # per-block buffers, reused: the planar block (only when a copy is needed) and (step,) vectors
    buf = None
    if any(p.dtype != torch.float32 or p.stride(1) != 1 for p in planes):
        buf = torch.empty(c, step, device=dev)
    ones = torch.ones(step, device=dev, dtype=torch.int64)
    x_low = _LOW32 - torch.arange(step, device=dev, dtype=torch.int64)
    vec = [torch.empty(step, device=dev) for _ in range(4)]
    best = torch.empty(kk, device=dev, dtype=torch.int64)
    emb_sum = None
    base = 0
    for p, s, lab, e in zip(planes, seg_img, lab_img, emb_img):
        n = p.shape[1]
        pred = torch.empty(n, device=dev, dtype=torch.uint8 if c < 256 else torch.int64)
        a_cil = torch.empty(n, device=dev)
        h = torch.zeros(kk * c, device=dev, dtype=torch.int64)
        for lo in range(0, n, step):  # pass 1: argmax, a_CIL, Σ p by (mask, argmax class), counts
            hi = min(n, lo + step)
            m = hi - lo
            pc = _prob_block(p, lo, hi, buf, softmax=logits, first=True)
            i = torch.where(s[lo:hi] >= 0, s[lo:hi], k).long()
            lab_c = lab[lo:hi].long()
            pmax = pc.amax(0)
            # argmax (first maximal class): the largest of (C − j) over the classes equal to the max
            pr = c - ((pc == pmax) * desc).amax(0).long()
            pr.masked_fill_(pr == c, 0)  # a NaN pixel equals no maximum: class 0, as the fused kernel (not an index c)
            pred[lo:hi] = pr
            valid = lab_c != VOID
            eff = torch.where(valid, lab_c, pr)  # ŷ'
            a_cil[lo:hi] = 1.0 - pc.gather(0, eff.unsqueeze(0)).squeeze(0)  # Eq. 10
            key1 = i * c + pr
            psum.index_add_(1, key1, pc)
            h.index_add_(0, key1, ones[:m])
            area.index_add_(0, i, ones[:m])
            counts.index_add_(0, torch.where(valid & counted_k[i], lab_c, c), ones[:m])
            if ent is not None:  # Σ_j p_j log p_j, class by class
                acc, t = vec[0][:m], vec[1][:m]
                for j in range(c):
                    torch.clamp(pc[j], min=1e-12, out=t).log_().mul_(pc[j])
                    if j == 0:
                        acc.copy_(t)
                    else:
                        acc.add_(t)
                ent.index_add_(0, i, acc.neg().double())
            if mar is not None:
                second = pc.scatter(0, pr.unsqueeze(0), -float("inf")).amax(0) if c > 1 else torch.zeros_like(pmax)
                mar.index_add_(0, i, (1.0 - (pmax - second)).double())
        hist += h
        # D_θ(m): the most frequent argmax class (this image's masks are complete in h); f(m′) = Σ_{m′} p
        dom = h.view(kk, c).argmax(1)
        f_img = psum.view(c, kk, c).gather(2, dom.view(1, kk, 1).expand(c, kk, 1)).squeeze(2)
        f_hat = f_img / torch.linalg.vector_norm(f_img, dim=0, keepdim=True).clamp(min=1e-12)  # (C, kk) planes
        best.fill_(_NO_REP)
        for lo in range(0, n, step):  # pass 2: cos(f(x), f(m′)) class by class; Eq. 11–12 sums; representative
            hi = min(n, lo + step)
            m = hi - lo
            pc = _prob_block(p, lo, hi, buf, softmax=logits, first=False)
            i = torch.where(s[lo:hi] >= 0, s[lo:hi], k).long()
            lab_c, a = lab[lo:hi].long(), a_cil[lo:hi]
            dot, sq, g, t = (v[:m] for v in vec)
            for j in range(c):  # p·f̂(m′) and |p|², one class plane at a time (mul and add: no fused rounding)
                torch.index_select(f_hat[j], 0, i, out=g).mul_(pc[j])
                torch.mul(pc[j], pc[j], out=t)
                if j == 0:
                    dot.copy_(g)
                    sq.copy_(t)
                else:
                    dot.add_(g)
                    sq.add_(t)
            cos = dot.div_(sq.sqrt_().clamp_(min=1e-12))
            pr = pred[lo:hi].long()
            eff = torch.where(lab_c != VOID, lab_c, pr)
            sim_by_class.index_add_(0, i * c + eff, (cos * a).double())
            cil_sum.index_add_(0, i, a.double())
            # the first pixel of m′ with the largest cosine (pixels outside m′ at −2, NaN at −4: never chosen)
            kc = torch.where(pr == dom.index_select(0, i), cos, -2.0).nan_to_num_(nan=-4.0)
            best.scatter_reduce_(0, i, _rep_key(kc, x_low[:m] - lo), reduce="amax")
        found = best != _NO_REP
        found[k] = False
        rep = torch.where(found, base + (_LOW32 - (best & _LOW32)), rep)
        if e is not None:
            idx = torch.where(s >= 0, s, k).long()
            emb_sum = _embedding_sums(e, idx, kk, emb_sum, (n,) if probs.dim() == 2 else probs.shape[-2:])
            del idx
        base += n

    area_k = area[:k]
    denom = area_k.clamp(min=1).unsqueeze(1)
    mean_prob = psum.view(c, kk, c).sum(2)[:, :k].t() / denom
    emb = None if emb_sum is None else emb_sum[:, :k].t() / denom
    return BatchStats(
        area=area_k, dominant=hist.view(kk, c)[:k].argmax(1), mean_prob=mean_prob,
        sim_by_class=sim_by_class.view(kk, c)[:k], cil=cil_sum[:k],
        entropy=None if ent is None else ent[:k], margin=None if mar is None else mar[:k],
        rep_pixel=rep[:k], counts=counts[:c], embedding=emb,
    )


# --------------------------------------------------------------------------- the fused CPU kernel
@functools.cache
def _fused_kernels():
    """The compiled pass-1 and pass-2 loops of :func:`_fused_reduce` (numba), or None without numba.

    Compiled on first use (≈ 2–4 s) and cached on disk by numba (``cache=True``) for later processes.
    """
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True)
    def pass1(rows, idx, lab, counted, softmax, pred, acil, norm, psum, hist, area, counts, ent, mar):
        """Per pixel x (a row of C values): softmax in place (when asked), argmax (first maximal class),
        a_CIL = 1 − p(ŷ′), |p|, Σ p by (mask, argmax class), counts; entropy and margin sums when
        ``ent`` / ``mar`` have entries."""
        n, c = rows.shape
        do_ent, do_mar = ent.shape[0] > 0, mar.shape[0] > 0
        for x in range(n):
            if softmax:
                mx = rows[x, 0]
                for j in range(1, c):
                    if rows[x, j] > mx:
                        mx = rows[x, j]
                s = np.float32(0.0)
                for j in range(c):
                    e = np.exp(rows[x, j] - mx)
                    rows[x, j] = e
                    s += e
                inv = np.float32(1.0) / s
                for j in range(c):
                    rows[x, j] = rows[x, j] * inv
            m = idx[x]
            best = rows[x, 0]
            pr = 0
            ss = 0.0
            for j in range(c):
                v = rows[x, j]
                ss += v * v
                if v > best:
                    best = v
                    pr = j
            lb = lab[x]
            valid = lb != 255
            eff = lb if valid else pr
            pred[x] = pr
            acil[x] = 1.0 - rows[x, eff]
            norm[x] = np.sqrt(ss)
            key = m * c + pr
            for j in range(c):
                psum[key, j] += rows[x, j]
            hist[key] += 1
            area[m] += 1
            if valid and counted[m]:
                counts[lb] += 1
            if do_ent:
                h = 0.0
                for j in range(c):
                    v = max(rows[x, j], np.float32(1e-12))
                    h -= rows[x, j] * np.log(v)
                ent[m] += h
            if do_mar:
                second = -np.inf if c > 1 else 0.0
                for j in range(c):
                    if j != pr and rows[x, j] > second:
                        second = rows[x, j]
                mar[m] += 1.0 - (best - second)

    @numba.njit(cache=True, nogil=True)
    def pass2(rows, idx, lab, pred, acil, norm, f_hat, dom, sim, cil, best, rep, base):
        """Per pixel: cos(f(x), f(m′)) = p·f̂(m′)/|p|; S[m, ŷ′] += cos·a_CIL; Σ a_CIL; the first pixel
        of m′ with the largest cosine (pixels outside m′ rank at −2)."""
        n, c = rows.shape
        for x in range(n):
            m = idx[x]
            d = 0.0
            for j in range(c):
                d += rows[x, j] * f_hat[m, j]
            cs = d / max(norm[x], 1e-12)
            lb = lab[x]
            pr = pred[x]
            eff = pr if lb == 255 else lb
            a = acil[x]
            sim[m * c + eff] += cs * a
            cil[m] += a
            key = cs if pr == dom[m] else -2.0
            if key > best[m]:
                best[m] = key
                rep[m] = base + x

    return pass1, pass2


def _fused_reduce(probs, segment, labels, n_masks, *, counted, embedding, need_entropy, need_margin, chunk,
                  logits) -> BatchStats:
    """:func:`reduce_batch` on the CPU with the compiled loops of :func:`_fused_kernels`.

    Per image, pass 1 runs over blocks of ``chunk`` pixels (each block's rows stay in cache
    between the softmax and the sums); then D_θ(m) and f̂(m′) of the image's masks, then
    pass 2. Sums are accumulated in float64, sequentially per pixel (deterministic).
    """
    pass1, pass2 = _fused_kernels()
    planes, seg_img, lab_img, emb_img = _image_planes(probs, segment, labels, embedding)
    c = planes[0].shape[0]
    if c > 255:  # the per-pixel argmax is kept as uint8
        raise ValueError(f"the fused kernel takes at most 255 classes, not {c} (kernel='torch' does)")
    k = n_masks
    kk = k + 1
    area = np.zeros(kk, np.int64)
    hist = np.zeros(kk * c, np.int64)
    psum = np.zeros((kk * c, c), np.float64)  # psum[m·C + j] = Σ p over the pixels of mask m whose argmax is j
    sim = np.zeros(kk * c, np.float64)
    cil = np.zeros(kk, np.float64)
    ent = np.zeros(kk if need_entropy else 0, np.float64)
    mar = np.zeros(kk if need_margin else 0, np.float64)
    counts = np.zeros(c, np.int64)
    counted_k = np.zeros(kk, np.bool_)
    if counted is None:
        counted_k[:k] = True
    else:
        counted_k[:k] = counted.detach().cpu().numpy().astype(np.bool_)
    n_total = sum(int(p.shape[1]) for p in planes)
    rep = np.full(kk, n_total, np.int64)
    best = np.full(kk, -3.0)
    emb_sum = None
    base = 0
    for p, s, lab, e in zip(planes, seg_img, lab_img, emb_img):
        n = p.shape[1]
        step = chunk or PIXEL_CHUNK
        rows = p.detach().float().t().numpy()  # (n, C) view: contiguous rows for channels-last memory
        idx_t = torch.where(s >= 0, s, k)
        idx = idx_t.numpy().astype(np.int64, copy=False)
        lab_n = lab.numpy().astype(np.int64, copy=False)
        # the compiled loops do not check bounds: refuse what would index outside the arrays
        if n and (int(s.max()) >= k or int(lab_n.min()) < 0 or bool(((lab_n >= c) & (lab_n != VOID)).any())):
            raise ValueError(f"segment ids must lie in [-1, {k}) and labels in [0, {c}) or {VOID}")
        pred = np.empty(n, np.uint8)  # C ≤ 255: labels are uint8 with 255 = void
        acil = np.empty(n, np.float32)
        norm = np.empty(n, np.float32)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            pass1(rows[lo:hi], idx[lo:hi], lab_n[lo:hi], counted_k, bool(logits), pred[lo:hi], acil[lo:hi],
                  norm[lo:hi], psum, hist, area, counts, ent, mar)
        dom = hist.reshape(kk, c).argmax(1)
        f = psum.reshape(kk, c, c)[np.arange(kk), dom]
        f_hat = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        pass2(rows, idx, lab_n, pred, acil, norm, f_hat, dom, sim, cil, best, rep, base)
        if e is not None:
            emb_sum = _embedding_sums(e, idx_t, kk, emb_sum, (n,) if probs.dim() == 2 else probs.shape[-2:])
        base += n
    area_k = torch.from_numpy(area[:k])
    denom = np.maximum(area[:k], 1)[:, None]
    mean_prob = torch.from_numpy((psum.reshape(kk, c, c).sum(1)[:k] / denom).astype(np.float32))
    emb = None if emb_sum is None else emb_sum[:, :k].t() / area_k.clamp(min=1).unsqueeze(1)
    t = torch.from_numpy
    return BatchStats(
        area=area_k, dominant=t(hist.reshape(kk, c)[:k].argmax(1)), mean_prob=mean_prob,
        sim_by_class=t(sim.reshape(kk, c)[:k]), cil=t(cil[:k]),
        entropy=t(ent[:k]) if need_entropy else None, margin=t(mar[:k]) if need_margin else None,
        rep_pixel=t(rep[:k]), counts=t(counts), embedding=emb,
    )


def _softmax_block_(p: torch.Tensor, lo: int, hi: int) -> None:
    """Softmax over the classes of pixels [lo, hi) of the (C,n) planes ``p``, in place, along its contiguous axis.

    Channels-last memory: rows of C classes per pixel; NCHW: C planes. (Softmax over dim 1
    of channels-last memory is 3.9× slower on the CPU; docs/performance.md.)
    """
    block = p[:, lo:hi]
    if block.stride(0) == 1:  # pixel-major
        rows = block.t()
        rows.copy_(torch.softmax(rows, 1))
    else:
        block.copy_(torch.softmax(block, 0))


def _prob_block(p: torch.Tensor, lo: int, hi: int, buf: torch.Tensor | None, *, softmax: bool,
                first: bool) -> torch.Tensor:
    """(C, hi−lo) float32 probabilities of pixels [lo, hi) of the (C,n) image ``p``, each class plane contiguous.

    float32 ``p``: with ``softmax`` the softmax is written over the logits in the first pass
    (:func:`_softmax_block_`); the block is a view when ``p`` is planar, else copied into
    ``buf`` (C, ≥ hi−lo). Other dtypes (bf16 logits): converted into ``buf`` and, with
    ``softmax``, the softmax taken there in every pass (the same ops on the same values:
    both passes see the same probabilities). Elementwise ops only after the softmax, so
    every pixel's values come from the same instructions wherever it lies (equal
    probabilities give equal cosines, which the representative pixel's tie-break relies on).
    """
    block = p[:, lo:hi]
    if p.dtype == torch.float32:
        if softmax and first:
            _softmax_block_(p, lo, hi)
        return block if block.stride(1) == 1 else buf[:, :hi - lo].copy_(block)
    out = buf[:, :hi - lo].copy_(block)
    if softmax:
        out.copy_(torch.softmax(out, 0))
    return out


def _image_planes(probs, segment, labels, embedding):
    """Per image: (C,n) probability planes (views, ``probs``' dtype), (n,) segment, (n,) labels, and the embedding (or None)."""
    if probs.dim() == 2:  # (N,C) pixels of one image
        emb = None if embedding is None else [embedding.t()]
        return [probs.t()], [segment.reshape(-1)], [labels.reshape(-1)], emb or [None]
    b, c = probs.shape[:2]
    planes = [probs[i].reshape(c, -1) for i in range(b)]  # views (NCHW or channels-last), any dtype
    segs = segment.reshape(b, -1)
    labs = labels.reshape(b, -1)
    embs = [None] * b if embedding is None else [embedding[i] for i in range(b)]
    return planes, list(segs), list(labs), embs


def _embedding_sums(e: torch.Tensor, idx: torch.Tensor, kk: int, acc: torch.Tensor | None, size) -> torch.Tensor:
    """Add Σ over each mask of the embedding, bilinearly upsampled to the image size, to ``acc`` (E,kk).

    e: (E,h,w) one image's embedding, or (E,n) already per pixel. Upsampled 8 channels at a
    time (interpolation is per channel), so no (E, H·W) array exists at once.
    """
    n_ch = e.shape[0]
    if acc is None:
        acc = torch.zeros(n_ch, kk, device=idx.device)
    if e.dim() == 2:
        return acc.index_add_(1, idx, e.float())
    for j in range(0, n_ch, 8):
        part = e[j:j + 8].unsqueeze(0).float()
        if tuple(part.shape[-2:]) != tuple(size):
            part = torch.nn.functional.interpolate(part, size=tuple(size), mode="bilinear", align_corners=False)
        acc[j:j + 8].index_add_(1, idx, part.reshape(part.shape[1], -1))
    return acc


# --------------------------------------------------------------------------- final scores
@dataclass
class MaskStats:
    """Per-mask statistics of the whole train set (host arrays, M masks).

    Filled batch by batch by the streaming pass; the final scores need the
    class counts of the whole set (Eq. 7–8), so they are computed at the end.
    """

    n_masks: int
    num_classes: int
    area: np.ndarray = field(init=False)
    dominant: np.ndarray = field(init=False)
    mean_prob: np.ndarray = field(init=False)
    sim_by_class: np.ndarray = field(init=False)
    cil: np.ndarray = field(init=False)
    entropy: np.ndarray = field(init=False)
    margin: np.ndarray = field(init=False)
    rep_pixel: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    embedding: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        m, c = self.n_masks, self.num_classes
        self.area = np.zeros(m, np.int64)
        self.dominant = np.zeros(m, np.int16)
        self.mean_prob = np.zeros((m, c), np.float32)
        self.sim_by_class = np.zeros((m, c), np.float32)
        self.cil = np.zeros(m, np.float64)
        self.entropy = np.zeros(m, np.float64)
        self.margin = np.zeros(m, np.float64)
        self.rep_pixel = np.full(m, -1, np.int64)
        self.counts = np.zeros(c, np.int64)

    def put(self, start: int, b: BatchStats, pixel_base: np.ndarray) -> None:
        """Store a batch's stats for global masks [start, start+k).

        pixel_base: (k,) int64, subtracted from the batch-flat representative pixel
        to make it a flat index within the mask's own image.
        """
        k = b.area.shape[0]
        sl = slice(start, start + k)
        self.area[sl] = b.area.cpu().numpy()
        self.dominant[sl] = b.dominant.cpu().numpy()
        self.mean_prob[sl] = b.mean_prob.cpu().numpy()
        self.sim_by_class[sl] = b.sim_by_class.float().cpu().numpy()
        self.cil[sl] = b.cil.cpu().numpy()
        if b.entropy is not None:
            self.entropy[sl] = b.entropy.cpu().numpy()
        if b.margin is not None:
            self.margin[sl] = b.margin.cpu().numpy()
        self.rep_pixel[sl] = b.rep_pixel.cpu().numpy() - pixel_base
        self.counts += b.counts.cpu().numpy()
        if b.embedding is not None:
            if self.embedding is None:
                self.embedding = np.zeros((self.n_masks, b.embedding.shape[1]), np.float32)
            self.embedding[sl] = b.embedding.cpu().numpy()


def compute_scores(
    fn: str, stats: MaskStats, *, queried: np.ndarray, seed: int = 0, kl_uniform: str = "present"
) -> tuple[np.ndarray, dict[str, object]]:
    """Final acquisition score of every mask, (M,) float64; queried masks get −inf.

    abc: Σ_c w_c S[m,c] with w from :func:`adaptive_class_weights` (Eq. 9–12).
    sim: Σ_c S[m,c].  cil / entropy / margin: the per-mask sums.  random: U(0,1).
    kl_uniform: Eq. 8's reference distribution (see :func:`adaptive_class_weights`).
    Returns (scores, info) where info holds the class weights and KL for ABC.
    """
    info: dict[str, object] = {}
    if fn == "abc":
        w, kl, rarity = adaptive_class_weights(stats.counts, uniform=kl_uniform)
        scores = stats.sim_by_class.astype(np.float64) @ w
        info = {"class_weight": w, "kl": kl, "rarity": rarity}
    elif fn == "sim":
        scores = stats.sim_by_class.astype(np.float64).sum(1)
    elif fn == "cil":
        scores = stats.cil.copy()
    elif fn == "entropy":
        scores = stats.entropy.copy()
    elif fn == "margin":
        scores = stats.margin.copy()
    elif fn == "random":
        scores = np.random.default_rng(seed).random(stats.n_masks)
    else:
        raise ValueError(f"unknown acquisition function {fn!r}")
    scores = np.asarray(scores, np.float64)
    scores[np.asarray(queried, bool)] = -np.inf
    return scores, info


def select_top(scores: np.ndarray, budget: int) -> np.ndarray:
    """The top-``budget`` masks by score over the whole train set (Eq. 13), best first.

    scores: (M,) float64 with −inf for masks that may not be queried. Ties are
    broken by the smaller mask id. Returns (B,) int64 mask ids.
    """
    scores = np.asarray(scores, np.float64)
    eligible = np.isfinite(scores)
    budget = min(int(budget), int(eligible.sum()))
    if budget <= 0:
        return np.zeros(0, np.int64)
    ids = np.flatnonzero(eligible)
    order = np.lexsort((ids, -scores[ids]))  # by score descending, then id ascending
    return ids[order[:budget]].astype(np.int64)
