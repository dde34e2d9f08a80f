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
) -> BatchStats:
    """Reduce per-pixel model outputs to per-mask statistics with scatter operations.

    probs: (N,C) float softmax probabilities of N pixels.
    segment: (N,) int64 local mask id in [0, n_masks), or -1 for pixels no mask covers.
    labels: (N,) int64 current labels ŷ (255 = void).
    counted: (n_masks,) bool, masks whose pixels count towards the class counts of
        Eq. 7–8 (the not-yet-queried masks); all masks when None.
    embedding: (N,E) optional per-pixel embedding for the LCM feature.
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
    eff = torch.where(lab == VOID, pred, lab)  # ŷ'
    valid = lab != VOID

    area = torch.bincount(seg, minlength=k)
    # dominant predicted class per mask: argmax of the (k,C) histogram of argmax classes
    hist = torch.bincount(seg * c + pred, minlength=k * c).view(k, c)
    dominant = hist.argmax(1)
    # mean softmax over the mask (Eq. 1) and over m' (pixels predicting the dominant class)
    mean_prob = torch.zeros(k, c, device=dev).index_add_(0, seg, p) / area.clamp(min=1).unsqueeze(1)
    in_mprime = pred == dominant[seg]
    f_mprime = torch.zeros(k, c, device=dev).index_add_(0, seg[in_mprime], p[in_mprime])
    f_mprime = f_mprime / f_mprime.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = (p * f_mprime[seg]).sum(1) / p.norm(dim=1).clamp(min=1e-12)
    cil = 1.0 - p.gather(1, eff.unsqueeze(1)).squeeze(1)  # Eq. 10
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

    # representative pixel: the pixel of m' with the largest cosine (first such pixel on ties)
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
    return BatchStats(
        area=area, dominant=dominant, mean_prob=mean_prob, sim_by_class=sim_by_class.view(k, c),
        cil=cil_sum, entropy=ent, margin=mar, rep_pixel=rep, counts=counts, embedding=emb,
    )


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
