"""The simulated foundation model of the built-in benchmark (SPEC §4).

It turns a synthetic scene (:class:`a2lc_cli.data.synthetic.Scene`) into SAM-like
correction units and Grounded-SAM-like round-0 labels:

1. one mask per scene region: objects whole, stuff already in pieces;
2. under-segmentation: some regions are merged into the neighbour of another class
   they share most border with (the smaller into the larger), so the mask's
   ground-truth majority and the class at a single pixel can differ;
3. borders a pixel or two off: the mask map is resampled through a smooth random
   displacement field;
4. some masks are dropped (uncovered, fill label): small ones more often; on ``voc``
   much of the background (a detector only covers what it detects);
5. each mask is labelled with the class of its dominant region, flipped to that
   region's look-alike *partner* with probability
   ``sigmoid((z - t_c) / SHARPNESS)``, where ``z`` is the same latent that pulled
   the region's appearance towards the partner and ``t_c`` is set from a
   class-dependent flip rate (higher for tail classes). The noise is therefore
   systematic and appearance-correlated, never independent coin flips.

Everything is seeded by ``(seed, preset, index)`` through a stream of its own, so
a rerun gives the same masks and labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config
from ..data.base import VOID, Source
from ..data.synthetic import Z_BETA, Scene, SyntheticSource, scene_rng
from ..errors import A2LCError
from ..state import ImageProposal
from .base import Labeler

SHARPNESS = 0.05
NOISE_VERSION = 1


@dataclass(frozen=True)
class NoiseModel:
    """How the simulated foundation model errs on one preset.

    flip_rate: (C,) share of a class's regions labelled as their partner.
    merge: probability that a small region (≤ merge_max_share of the image) is merged into
        a neighbour of another class at least twice its size.
    border_px: amplitude (px) of the smooth displacement of mask borders.
    drop, drop_small, drop_scale: a mask is dropped with probability
        drop + drop_small·exp(−area / drop_scale).
    background_cover: share of background regions covered by a mask (``voc``; 1 = all).
    void_label: what a mask over a void region (the ego hood) is called; dropped otherwise.
    background: the background class (``voc``): its masks get no detector score (NaN) nor prompt (−1).
    """

    flip_rate: tuple[float, ...]
    merge: float = 0.07
    merge_max_share: float = 0.015
    border_px: float = 0.5
    drop: float = 0.03
    drop_small: float = 0.35
    drop_scale: float = 25.0
    background_cover: float = 1.0
    void_label: int = VOID
    background: int | None = None


NOISE: dict[str, NoiseModel] = {
    "city": NoiseModel(
        flip_rate=(
            0.06, 0.28, 0.08, 0.46, 0.42, 0.33, 0.46, 0.33,  # road sidewalk building wall fence pole light sign
            0.08, 0.38, 0.04, 0.13, 0.50, 0.06, 0.46, 0.38,  # vegetation terrain sky person rider car truck bus
            0.50, 0.50, 0.38,  # train motorcycle bicycle
        ),
        void_label=13,  # the hood is detected as a car
    ),
    "voc": NoiseModel(
        flip_rate=(
            0.03,  # background (a false detection naming an object)
            0.17, 0.24, 0.21, 0.24, 0.27, 0.17, 0.12, 0.19, 0.27, 0.24,  # aeroplane .. cow
            0.27, 0.19, 0.24, 0.24, 0.07, 0.27, 0.24, 0.27, 0.21, 0.24,  # diningtable .. tvmonitor
        ),
        merge=0.15,
        merge_max_share=0.06,
        border_px=0.7,
        drop=0.03,
        drop_small=0.3,
        drop_scale=30.0,
        background_cover=0.6,
        background=0,
    ),
}


def _expected_rate(t: np.ndarray) -> np.ndarray:
    """E_z[sigmoid((z − t)/SHARPNESS)] for z ~ Beta(1, Z_BETA), per threshold t (midpoint rule)."""
    z = (np.arange(4000) + 0.5) / 4000
    pdf = Z_BETA * (1 - z) ** (Z_BETA - 1) / z.size
    return (pdf[None] / (1.0 + np.exp(-(z[None] - np.asarray(t)[:, None]) / SHARPNESS))).sum(1)


_T_GRID = np.linspace(-0.6, 1.6, 1101)
_RATE_GRID = _expected_rate(_T_GRID)  # decreasing in t


def flip_threshold(rate: np.ndarray) -> np.ndarray:
    """t_c such that a class's expected flip rate E_z[p(z)] equals ``rate`` (z ~ Beta(1, Z_BETA))."""
    return np.interp(np.asarray(rate, np.float64), _RATE_GRID[::-1], _T_GRID[::-1])


def flip_probability(z: np.ndarray, cls: np.ndarray, model: NoiseModel) -> np.ndarray:
    """(n,) probability that a region of class ``cls`` (n,) with latent ``z`` (n,) is mislabelled."""
    rate = np.asarray(model.flip_rate, np.float64)
    t = flip_threshold(rate)[np.minimum(cls, len(rate) - 1)]
    p = 1.0 / (1.0 + np.exp(-(z - t) / SHARPNESS))
    return np.where(cls == VOID, 0.0, p)


def merge_targets(
    scene: Scene, region: np.ndarray, rng: np.random.Generator, p: float, *, max_share: float = 0.015
) -> np.ndarray:
    """(n,) the mask each region ends up in after under-segmentation (identity for most).

    A region picked with probability ``p`` joins the neighbour of another class it
    shares most border with, if the region covers at most ``max_share`` of the image
    and the neighbour is at least twice its size; chains resolve to their root.
    """
    n = scene.n_regions
    area = np.bincount(region.ravel(), minlength=n)
    a = np.concatenate([region[:, :-1].ravel(), region[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([region[:, 1:].ravel(), region[1:, :].ravel()]).astype(np.int64)
    diff = scene.cls[a] != scene.cls[b]
    a, b = a[diff], b[diff]
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    target = np.arange(n)
    if src.size == 0:
        return target
    code, border = np.unique(src * n + dst, return_counts=True)
    s, d = code // n, code % n
    # only a small region, into a neighbour at least twice its size (so merges cannot form
    # cycles), never into or out of void
    cap = max_share * region.size
    ok = (2 * area[s] <= area[d]) & (area[s] <= cap) & (scene.cls[s] != VOID) & (scene.cls[d] != VOID)
    s, d, border = s[ok], d[ok], border[ok]
    if s.size == 0:
        return target
    # each region's neighbour with the longest shared border
    order = np.lexsort((-border, s))
    s, d = s[order], d[order]
    first = np.r_[True, s[1:] != s[:-1]]
    best = np.full(n, -1)
    best[s[first]] = d[first]
    pick = (best >= 0) & (rng.random(n) < p)
    target[pick] = best[pick]
    for _ in range(n):  # resolve chains a→b→c to c
        nxt = target[target]
        if np.array_equal(nxt, target):
            break
        target = nxt
    return target


def jitter_borders(seg: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """(H,W) the map resampled through a smooth random displacement of about ``amplitude`` px."""
    import cv2

    h, w = seg.shape
    if amplitude <= 0:
        return seg
    small = rng.standard_normal((2, max(2, h // 8), max(2, w // 8))).astype(np.float32)
    dy = cv2.resize(small[0], (w, h), interpolation=cv2.INTER_CUBIC) * amplitude
    dx = cv2.resize(small[1], (w, h), interpolation=cv2.INTER_CUBIC) * amplitude
    yy, xx = np.mgrid[0:h, 0:w]
    yi = np.clip(np.rint(yy + dy), 0, h - 1).astype(np.int64)
    xi = np.clip(np.rint(xx + dx), 0, w - 1).astype(np.int64)
    return seg[yi, xi]


def simulate_proposal(
    scene: Scene, model: NoiseModel, rng: np.random.Generator, *, fill_label: int
) -> tuple[ImageProposal, dict[str, np.ndarray]]:
    """Masks and round-0 labels of one scene (steps 1–5 of the module docstring).

    Returns the proposal (segment (H,W) int32 with −1 uncovered, label0 (H,W) uint8,
    score (k,), prompt (k,)) and, for tests and diagnostics, per-mask arrays
    (k,): ``region`` dominant region, ``true`` its class, ``flipped`` bool, ``z``.
    """
    n = scene.n_regions
    target = merge_targets(scene, scene.region, rng, model.merge, max_share=model.merge_max_share)
    seg = jitter_borders(target[scene.region], rng, model.border_px)
    area = np.bincount(seg.ravel(), minlength=n)
    # dominant region of each mask after jitter: the region with most pixels in it
    pair = np.bincount(seg.ravel().astype(np.int64) * n + scene.region.ravel(), minlength=n * n).reshape(n, n)
    dom = pair.argmax(1)
    cls = scene.cls[dom]
    z = scene.z[dom]
    alive = area > 0
    # drops: small masks more often; background beyond background_cover; void unless named
    p_drop = model.drop + model.drop_small * np.exp(-area / model.drop_scale)
    if model.background_cover < 1.0:
        is_bg = (cls == 0) & ~scene.thing[dom]
        p_drop = np.where(is_bg, 1.0 - model.background_cover, p_drop)
    keep = alive & (rng.random(n) >= p_drop)
    if model.void_label == VOID:
        keep &= cls != VOID
    # labels: the dominant region's class, flipped to its partner with p(class, z)
    flipped = rng.random(n) < flip_probability(z, cls, model)
    label = np.where(flipped, scene.partner[dom], cls).astype(np.int64)
    label = np.where(cls == VOID, model.void_label, label)
    flipped &= cls != VOID
    # dense local ids over the kept masks
    kept = np.flatnonzero(keep)
    local = np.full(n + 1, -1, np.int64)
    local[kept] = np.arange(kept.size)
    segment = local[seg].astype(np.int32)
    lab = label[kept].astype(np.uint8)
    label0 = np.full(seg.shape, fill_label, np.uint8)
    covered = segment >= 0
    label0[covered] = lab[segment[covered]]
    score = np.clip(0.35 + 0.6 * (1 - z[kept]) + rng.normal(0, 0.08, kept.size), 0.05, 0.99).astype(np.float32)
    prompt = lab.astype(np.int16)
    if model.background is not None:  # masks named background are segmenter proposals, not detections
        bgm = lab == model.background
        score[bgm] = np.nan
        prompt[bgm] = -1
    info = {"region": dom[kept], "true": cls[kept], "flipped": flipped[kept], "z": z[kept]}
    return ImageProposal(segment=segment, label0=label0, score=score, prompt=prompt), info


class SimulatedFoundationModel(Labeler):
    """Grounded-SAM-like masks and labels for the built-in benchmark (``--labeler simulate``)."""

    name = "simulate"

    def __init__(self, cfg: Config, source: Source):
        if not isinstance(source, SyntheticSource):
            raise A2LCError(
                f"the simulate labeler needs the built-in synthetic source (this workspace uses {cfg.source.kind!r}); "
                "use --labeler import or grounded-sam"
            )
        self.source = source
        self.model = NOISE[source.preset]

    def meta(self) -> dict[str, Any]:
        return {"labeler": self.name, "noise_version": NOISE_VERSION}

    def simulate(self, index: int) -> tuple[ImageProposal, dict[str, np.ndarray]]:
        """The proposal of train image ``index`` and its per-mask diagnostics."""
        src = self.source
        rng = scene_rng(src.seed, src.preset, "train", index, stream=1)
        return simulate_proposal(src.scene("train", index), self.model, rng, fill_label=src.classes.fill_label)

    def propose(self, index: int, image: np.ndarray, gt: np.ndarray | None) -> ImageProposal:
        return self.simulate(index)[0]
