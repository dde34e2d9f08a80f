"""The built-in benchmark (SPEC §4): a seeded generator of labelled street / object scenes.

Every image is rendered on demand from a scene drawn with its own random
generator, seeded by ``(seed, preset, split, index)``, so the same triple always
gives the same image, ground truth and scene, and images do not depend on each
other. A scene is a partition of the image into *regions* (one per object, several
per stuff area); each region carries

- its class (255 = void, e.g. the ego-vehicle hood of the ``city`` preset),
- an appearance *style* (its class's colour/texture statistics),
- a confusable *partner* class, drawn from the class's list of look-alikes, and
- a latent ``z`` in [0, 1]: how far the region's appearance is pulled towards the
  partner's. The simulated foundation model (:mod:`a2lc_cli.labelers.simulate`)
  mislabels a region as its partner with a probability that grows with the same
  ``z``, so label noise is systematic and appearance-correlated, as a real
  foundation model's is.

- its *role* (``voc`` only): a *decoy* is a patch of background drawn in the
  silhouette, size and look of an object class, a *part* a small piece of an object
  drawn like another class; the simulated detector names them as that class (real
  Grounded SAM's false positives on background and its small part masks).

Presets (data, :data:`PRESETS`): ``city`` (19 Cityscapes classes, a driving scene
with a Cityscapes-like long tail) and ``voc`` (background + 20 VOC classes, 1–6
objects with their parts on a background of several textured areas, with decoys).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np

from ..config import Config
from ..errors import A2LCError
from .base import SPLITS, VOID, ClassInfo, Source, default_palette

# --------------------------------------------------------------------------- class lists
CITY_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITY_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)
VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS,
 TRAIN, MOTO, BIKE) = range(19)


@dataclass(frozen=True)
class Style:
    """Colour/texture statistics of a class (or of a background kind).

    colour: mean RGB (0..255); noise: amplitude of per-pixel noise; blotch: amplitude
    of low-frequency noise; stripes: up to two sinusoids (amplitude, period in px at
    the preset's default size, angle in degrees).
    """

    colour: tuple[float, float, float]
    noise: float = 6.0
    blotch: float = 4.0
    stripes: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True)
class PresetSpec:
    """Everything that defines a preset: classes, looks, look-alikes and default sizes.

    styles: one per class, then extra styles (background kinds, the void hood).
    partners: class -> ((look-alike class, weight), ...); for background kinds the
        key is the style index (≥ C) and the partners are object classes.
    """

    name: str
    classes: ClassInfo
    styles: tuple[Style, ...]
    partners: dict[int, tuple[tuple[int, float], ...]]
    height: int
    width: int
    n_train: int
    n_val: int
    layout: Callable[["_Canvas", np.random.Generator], None]


# --------------------------------------------------------------------------- scene
ROLE_PLAIN, ROLE_PART, ROLE_DECOY = 0, 1, 2

@dataclass
class Scene:
    """The generator's description of one image (used by the simulated labeler).

    region: (H,W) int32 region index per pixel (every pixel belongs to one region).
    cls: (n,) uint8 class of each region (255 = void).
    thing: (n,) bool whether the region is a whole object (else a piece of stuff).
    style: (n,) int16 appearance style of each region.
    partner: (n,) uint8 the class the region may be confused with.
    z: (n,) float32 latent in [0,1]: how much the region looks like its partner.
    role: (n,) uint8 ROLE_PLAIN, ROLE_PART (a small piece of an object that looks like
        another class: a bus window, a person's bag) or ROLE_DECOY (a patch of background
        that looks like an object class: a dark window like a tvmonitor); for both, the
        partner is the class it looks like and z ≥ 0.55. Only ``voc`` scenes have them.
    parent: (n,) int32 the object region a part belongs to (−1 otherwise).
    """

    region: np.ndarray
    cls: np.ndarray
    thing: np.ndarray
    style: np.ndarray
    partner: np.ndarray
    z: np.ndarray
    role: np.ndarray | None = None
    parent: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.cls.shape[0]
        if self.role is None:
            self.role = np.zeros(n, np.uint8)
        if self.parent is None:
            self.parent = np.full(n, -1, np.int32)

    @property
    def n_regions(self) -> int:
        return int(self.cls.shape[0])

    def area(self) -> np.ndarray:
        """(n,) int64 pixel count of each region."""
        return np.bincount(self.region.ravel(), minlength=self.n_regions)


class _Canvas:
    """Paints regions back to front; later regions overwrite earlier ones."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.region = np.zeros((h, w), np.int32)
        self.cls: list[int] = []
        self.style: list[int] = []
        self.thing: list[bool] = []
        self.role: list[int] = []
        self.lure: list[int] = []
        self.parent: list[int] = []

    def add(self, mask: np.ndarray, cls: int, *, thing: bool, style: int | None = None, role: int = 0,
            lure: int = -1, parent: int = -1) -> int:
        """Paint ``mask`` (H,W) bool as a new region; returns its index.

        role/lure/parent: see :class:`Scene` (a decoy or a part region looks like class ``lure``).
        """
        rid = len(self.cls)
        self.cls.append(cls)
        self.style.append(cls if style is None else style)
        self.thing.append(thing)
        self.role.append(role)
        self.lure.append(lure)
        self.parent.append(parent)
        self.region[mask] = rid
        return rid

    def add_split(
        self, mask: np.ndarray, cls: int, k: int, rng: np.random.Generator, *, style: int | None = None,
        stretch: float = 1.0,
    ) -> None:
        """Paint ``mask`` as ``k`` stuff regions: Voronoi cells of random seeds inside it.

        ``stretch`` > 1 makes cells wider than tall (road, sidewalk patches).
        """
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return
        k = int(max(1, min(k, ys.size // 12)))
        if k == 1:
            self.add(mask, cls, thing=False, style=style)
            return
        pick = rng.choice(ys.size, size=k, replace=False)
        sy, sx = ys[pick].astype(np.float32), xs[pick].astype(np.float32)
        d = ((ys[:, None] - sy[None]) * stretch) ** 2 + (xs[:, None] - sx[None]) ** 2
        cell = d.argmin(1)
        base = len(self.cls)
        for j in range(k):
            self.cls.append(cls)
            self.style.append(cls if style is None else style)
            self.thing.append(False)
            self.role.append(ROLE_PLAIN)
            self.lure.append(-1)
            self.parent.append(-1)
        self.region[ys, xs] = base + cell

    # shapes -------------------------------------------------------------------------------
    def ellipse(self, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((self.yy - cy) / max(ry, 0.5)) ** 2 + ((self.xx - cx) / max(rx, 0.5)) ** 2 <= 1.0

    def rect(self, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
        return (self.yy >= y0) & (self.yy < y1) & (self.xx >= x0) & (self.xx < x1)

    def ring(self, cy: float, cx: float, r: float, width: float) -> np.ndarray:
        d = np.sqrt((self.yy - cy) ** 2 + (self.xx - cx) ** 2)
        return (d <= r) & (d >= r - width)


# --------------------------------------------------------------------------- city layout
def _city_layout(c: _Canvas, rng: np.random.Generator) -> None:
    """A driving scene: sky, facades and trees above the horizon; road, sidewalks below;
    poles with signs and lights, vehicles, pedestrians and cyclists in front."""
    H, W = c.h, c.w
    yy, xx = c.yy, c.xx
    h0 = H * rng.uniform(0.36, 0.5)  # horizon
    xv = W * rng.uniform(0.35, 0.65)  # vanishing point
    c.add_split(yy < h0 + 2, SKY, int(rng.integers(1, 4)), rng)
    # facades and trees along the horizon
    x = -rng.uniform(0, 0.1) * W
    while x < W:
        bw = W * rng.uniform(0.07, 0.26)
        kind = rng.choice(3, p=[0.74, 0.18, 0.08])
        top = h0 * rng.uniform(-0.4, 0.3)
        if kind == 0:
            m = c.rect(top, x, h0 + 0.06 * H, x + bw)
            c.add_split(m, BUILDING, int(rng.integers(1, 4)), rng)
        elif kind == 1:
            r = bw * rng.uniform(0.55, 0.8)
            m = c.ellipse(h0 - 0.4 * r, x + bw / 2, r * 0.9, r)
            for _ in range(int(rng.integers(1, 3))):
                m |= c.ellipse(h0 - r * rng.uniform(0.3, 1.0), x + bw * rng.uniform(0, 1), r * 0.7, r * 0.7)
            c.add_split(m, VEG, int(rng.integers(1, 3)), rng)
        x += bw
    # trees in front of the facades
    for _ in range(int(rng.integers(1, 4))):
        r = W * rng.uniform(0.05, 0.13)
        cx, cy = W * rng.uniform(0, 1), h0 - H * rng.uniform(0.05, 0.25)
        m = c.ellipse(cy, cx, r * 0.8, r)
        m |= c.ellipse(cy - r * 0.4, cx + r * rng.uniform(-0.6, 0.6), r * 0.6, r * 0.7)
        c.add_split(m, VEG, int(rng.integers(1, 3)), rng)
    # ground: road trapezoid, sidewalk bands, something beyond each sidewalk
    t = np.clip((yy - h0) / (H - h0), 0, 1)
    half = W * (0.06 + rng.uniform(0.6, 0.8) * t)
    sw = W * (0.03 + rng.uniform(0.16, 0.3) * t)
    below = yy >= h0
    left_edge, right_edge = xv - half, xv + half
    for side, outer in ((0, xx < left_edge - sw), (1, xx > right_edge + sw)):
        what = rng.choice(3, p=[0.5, 0.32, 0.18])
        m = below & outer & (yy >= h0 + (0.0 if what else -0.01 * H))
        if what == 0:
            c.add_split(m, BUILDING, 1, rng)
        elif what == 1:
            c.add_split(m, VEG, int(rng.integers(1, 3)), rng)
        else:
            c.add_split(m, TERRAIN, int(rng.integers(1, 3)), rng)
        sm = below & ~outer & ((xx < left_edge) if side == 0 else (xx > right_edge))
        c.add_split(sm, SIDEWALK, int(rng.integers(1, 4)), rng, stretch=0.5)
    road = below & (xx >= left_edge) & (xx <= right_edge)
    c.add_split(road, ROAD, int(rng.integers(3, 8)), rng, stretch=2.5)
    # walls and fences at the roadside
    for cls, p in ((WALL, 0.38), (FENCE, 0.45)):
        if rng.random() < p:
            side = rng.integers(2)
            x0 = W * rng.uniform(0, 0.25) if side == 0 else W * rng.uniform(0.5, 0.8)
            m = c.rect(h0 - H * rng.uniform(0.05, 0.13), x0, h0 + H * rng.uniform(0.02, 0.08),
                       x0 + W * rng.uniform(0.12, 0.3))
            m &= ~road
            c.add(m, cls, thing=False)
    # poles, with a sign or a light on top
    pw = max(2.0, W / 90)
    for _ in range(int(rng.integers(1, 5))):
        side = rng.integers(2)
        tb = rng.uniform(0.1, 0.7)
        yb = h0 + tb * (H - h0)
        edge = xv - W * (0.05 + 0.5 * tb) if side == 0 else xv + W * (0.05 + 0.5 * tb)
        px = edge + (-1 if side == 0 else 1) * W * rng.uniform(0.0, 0.05)
        yt = h0 - H * rng.uniform(0.12, 0.38)
        c.add(c.rect(yt, px, yb, px + pw), POLE, thing=True)
        u = rng.random()
        if u < 0.42:
            s = H * rng.uniform(0.05, 0.085)
            c.add(c.rect(yt - s * 0.3, px - s * 0.45, yt + s * 0.7, px + pw + s * 0.45), SIGN, thing=True)
        elif u < 0.72:
            s = H * rng.uniform(0.06, 0.09)
            c.add(c.rect(yt - s * 0.2, px - s * 0.2, yt + s * 0.8, px + pw + s * 0.2), LIGHT, thing=True)
    # vehicles, far to near
    n_veh = int(rng.poisson(2.8))
    kinds = rng.choice([CAR, TRUCK, BUS], size=n_veh, p=[0.92, 0.045, 0.035])
    ts = np.sort(rng.uniform(0.05, 1.0, size=n_veh) ** 0.8)
    if rng.random() < 0.06:  # a tram/train near the horizon, behind everything else on the road
        ty = h0 + 0.05 * (H - h0)
        tw = W * rng.uniform(0.3, 0.55)
        tx = xv - tw * rng.uniform(0.2, 0.8)
        c.add(c.rect(ty - H * rng.uniform(0.13, 0.2), tx, ty, tx + tw), TRAIN, thing=True)
    for kind, tv in zip(kinds, ts):
        yb = h0 + tv * (H - h0)
        scale = 0.06 + 0.28 * tv
        vw = W * scale * {CAR: 1.0, TRUCK: 1.3, BUS: 1.5}[int(kind)]
        vh = vw * {CAR: 0.5, TRUCK: 0.8, BUS: 0.72}[int(kind)]
        hw = W * (0.05 + 0.55 * tv)
        cx = xv + rng.uniform(-1.1, 1.1) * hw
        if kind == CAR:
            m = c.rect(yb - vh * 0.6, cx - vw / 2, yb, cx + vw / 2)
            m |= c.rect(yb - vh, cx - vw * 0.3, yb - vh * 0.55, cx + vw * 0.3)
            m |= c.ellipse(yb - vh * 0.6, cx, vh * 0.45, vw * 0.38)
        else:
            m = c.rect(yb - vh, cx - vw / 2, yb, cx + vw / 2)
        c.add(m, int(kind), thing=True)
    # pedestrians on the sidewalks
    for _ in range(int(rng.poisson(1.3))):
        tp = rng.uniform(0.1, 0.9)
        yb = h0 + tp * (H - h0)
        ph = H * (0.12 + 0.32 * tp)
        side = rng.integers(2)
        hw = W * (0.05 + 0.55 * tp)
        cx = xv + (-1 if side == 0 else 1) * hw * rng.uniform(0.9, 1.25)
        m = c.ellipse(yb - ph * 0.45, cx, ph * 0.42, ph * 0.15)
        m |= c.ellipse(yb - ph * 0.9, cx, ph * 0.1, ph * 0.08)
        c.add(m, PERSON, thing=True)
    # cyclists (rider + bicycle / motorcycle) and parked bicycles
    for parked in (False, True):
        if rng.random() >= (0.38 if not parked else 0.3):
            continue
        tp = rng.uniform(0.15, 0.9)
        yb = h0 + tp * (H - h0)
        bh = H * (0.07 + 0.17 * tp)
        hw = W * (0.05 + 0.55 * tp)
        cx = xv + rng.uniform(-1.1, 1.1) * hw
        kind = BIKE if (parked or rng.random() < 0.6) else MOTO
        r = bh * 0.45
        wd = max(1.5, r * (0.35 if kind == BIKE else 0.6))
        m = c.ring(yb - r, cx - bh * 0.55, r, wd) | c.ring(yb - r, cx + bh * 0.55, r, wd)
        m |= c.rect(yb - r * 1.6, cx - bh * 0.55, yb - r * (1.6 - (0.5 if kind == BIKE else 1.0)), cx + bh * 0.55)
        if not parked:
            rh = bh * 1.5
            body = c.ellipse(yb - r * 1.6 - rh * 0.35, cx, rh * 0.38, rh * 0.17)
            body |= c.ellipse(yb - r * 1.6 - rh * 0.8, cx, rh * 0.11, rh * 0.09)
            c.add(m & ~body, kind, thing=True)
            c.add(body, RIDER, thing=True)
        else:
            c.add(m, kind, thing=True)
    # the ego vehicle's hood (void in the ground truth, as in Cityscapes)
    if rng.random() < 0.3:
        c.add(c.ellipse(H * 1.15, W * 0.5, H * rng.uniform(0.2, 0.27), W * 0.7), VOID, thing=True, style=19)


_CITY_STYLES = (
    Style((112, 104, 112), noise=5, blotch=6),  # road
    Style((138, 116, 132), noise=5, blotch=4, stripes=((9, 6, 0),)),  # sidewalk
    Style((118, 98, 80), noise=6, blotch=5, stripes=((13, 7, 0), (13, 5, 90))),  # building
    Style((146, 126, 104), noise=6, blotch=4, stripes=((12, 4, 0),)),  # wall
    Style((130, 130, 90), noise=8, blotch=3, stripes=((18, 3, 90),)),  # fence
    Style((84, 84, 100), noise=4, blotch=2),  # pole
    Style((160, 104, 30), noise=10, blotch=2, stripes=((25, 3, 0),)),  # traffic light
    Style((196, 176, 50), noise=6, blotch=2),  # traffic sign
    Style((58, 126, 46), noise=22, blotch=10),  # vegetation
    Style((122, 146, 78), noise=12, blotch=6),  # terrain
    Style((128, 170, 222), noise=2, blotch=8),  # sky
    Style((176, 76, 88), noise=14, blotch=4),  # person
    Style((196, 90, 54), noise=14, blotch=4, stripes=((10, 4, 90),)),  # rider
    Style((40, 52, 146), noise=5, blotch=5),  # car
    Style((40, 88, 126), noise=5, blotch=4, stripes=((12, 6, 90),)),  # truck
    Style((70, 104, 160), noise=5, blotch=4, stripes=((16, 7, 0),)),  # bus
    Style((64, 122, 116), noise=5, blotch=4, stripes=((16, 4, 0),)),  # train
    Style((112, 40, 136), noise=8, blotch=2),  # motorcycle
    Style((142, 44, 84), noise=8, blotch=2, stripes=((14, 3, 45),)),  # bicycle
    Style((50, 50, 56), noise=3, blotch=3),  # 19: ego hood (void)
)
_CITY_PARTNERS: dict[int, tuple[tuple[int, float], ...]] = {
    ROAD: ((SIDEWALK, 0.85), (TERRAIN, 0.15)),
    SIDEWALK: ((ROAD, 0.7), (TERRAIN, 0.3)),
    BUILDING: ((WALL, 0.55), (FENCE, 0.25), (SKY, 0.2)),
    WALL: ((BUILDING, 0.65), (FENCE, 0.35)),
    FENCE: ((WALL, 0.5), (BUILDING, 0.3), (VEG, 0.2)),
    POLE: ((SIGN, 0.6), (BUILDING, 0.4)),  # never light: the token "traffic" names traffic sign
    LIGHT: ((SIGN, 1.0),),  # real: the token "traffic" maps to traffic sign, so nearly every light is a sign
    SIGN: ((POLE, 1.0),),
    VEG: ((TERRAIN, 0.55), (BUILDING, 0.45)),
    TERRAIN: ((VEG, 0.6), (SIDEWALK, 0.4)),
    SKY: ((BUILDING, 0.6), (VEG, 0.4)),
    PERSON: ((RIDER, 1.0),),
    RIDER: ((PERSON, 1.0),),
    CAR: ((TRUCK, 0.6), (BUS, 0.4)),
    TRUCK: ((CAR, 0.5), (BUS, 0.5)),
    BUS: ((TRUCK, 0.45), (CAR, 0.35), (TRAIN, 0.2)),
    TRAIN: ((BUS, 0.6), (TRUCK, 0.2), (CAR, 0.2)),
    MOTO: ((BIKE, 0.8), (RIDER, 0.2)),
    BIKE: ((MOTO, 0.7), (RIDER, 0.3)),
    19: ((CAR, 1.0),),  # the ego hood (void, style 19) looks a bit like a car
}

# --------------------------------------------------------------------------- voc layout
(BG, AERO, BICYCLE, BIRD, BOAT, BOTTLE, VBUS, VCAR, CAT, CHAIR, COW, TABLE, DOG, HORSE, MBIKE, VPERSON, PLANT,
 SHEEP, SOFA, VTRAIN, TV) = range(21)
_VOC_KINDS = ("wall", "grass", "sky", "floor", "water")  # background kinds: styles 21..25
_VOC_OBJECT_P = np.array(
    # aero bicycle bird boat bottle bus car cat chair cow table dog horse mbike person plant sheep sofa train tv
    [4.5, 3.5, 5.0, 3.5, 4.0, 3.0, 6.5, 6.0, 5.5, 2.5, 2.8, 6.0, 3.3, 3.3, 20.0, 3.8, 2.7, 3.3, 3.2, 3.6]
)
_VOC_OBJECT_P = _VOC_OBJECT_P / _VOC_OBJECT_P.sum()


def _voc_object(c: _Canvas, cls: int, cy: float, cx: float, s: float) -> np.ndarray:
    """The (H,W) bool mask of a class-typical silhouette of size ``s`` px centred at (cy, cx)."""
    e, r = c.ellipse, c.rect
    if cls in (CAT, DOG, COW, HORSE, SHEEP):
        long = {CAT: 0.32, DOG: 0.36, COW: 0.42, HORSE: 0.42, SHEEP: 0.38}[cls] * s
        m = e(cy, cx, long * 0.5, long)
        m |= e(cy - long * 0.45, cx + long * 0.95, long * 0.3, long * 0.28)
        for dx in (-0.7, -0.4, 0.4, 0.7):
            m |= r(cy, cx + dx * long - s * 0.03, cy + long * 0.95, cx + dx * long + s * 0.03)
        return m
    if cls in (VBUS, VCAR, VTRAIN):
        L = {VBUS: 0.5, VCAR: 0.42, VTRAIN: 0.55}[cls] * s
        Hh = {VBUS: 0.5, VCAR: 0.3, VTRAIN: 0.38}[cls] * s
        m = r(cy - Hh / 2, cx - L, cy + Hh / 2, cx + L)
        if cls == VCAR:
            m |= r(cy - Hh, cx - L * 0.5, cy, cx + L * 0.5)
        m |= e(cy + Hh / 2, cx - L * 0.6, Hh * 0.28, Hh * 0.28) | e(cy + Hh / 2, cx + L * 0.6, Hh * 0.28, Hh * 0.28)
        return m
    if cls in (BICYCLE, MBIKE):
        rr = 0.22 * s
        wd = max(1.5, rr * (0.3 if cls == BICYCLE else 0.55))
        m = c.ring(cy, cx - rr * 1.2, rr, wd) | c.ring(cy, cx + rr * 1.2, rr, wd)
        m |= r(cy - rr * 0.9, cx - rr * 1.2, cy - rr * (0.9 - (0.35 if cls == BICYCLE else 0.8)), cx + rr * 1.2)
        return m
    if cls == VPERSON:
        m = e(cy, cx, s * 0.38, s * 0.14) | e(cy - s * 0.48, cx, s * 0.1, s * 0.08)
        return m
    if cls in (AERO, BIRD):
        L = (0.48 if cls == AERO else 0.3) * s
        m = e(cy, cx, L * 0.18, L)
        m |= _triangle(c, (cy, cx - L * 0.3), (cy - L * 0.7, cx + L * 0.15), (cy, cx + L * 0.3))
        m |= _triangle(c, (cy, cx - L * 0.3), (cy + L * 0.7, cx + L * 0.15), (cy, cx + L * 0.3))
        return m
    if cls == BOAT:
        m = _trapezoid(c, cy, cy + s * 0.2, cx - s * 0.45, cx + s * 0.45, s * 0.12)
        m |= _triangle(c, (cy, cx - s * 0.05), (cy - s * 0.45, cx), (cy, cx + s * 0.3))
        return m
    if cls == BOTTLE:
        body = r(cy - s * 0.15, cx - s * 0.14, cy + s * 0.4, cx + s * 0.14)
        return body | r(cy - s * 0.4, cx - s * 0.06, cy, cx + s * 0.06)
    if cls == PLANT:
        m = r(cy + s * 0.1, cx - s * 0.15, cy + s * 0.45, cx + s * 0.15)
        m |= e(cy - s * 0.12, cx, s * 0.25, s * 0.3) | e(cy - s * 0.2, cx - s * 0.2, s * 0.15, s * 0.15)
        return m
    if cls == CHAIR:
        m = r(cy, cx - s * 0.2, cy + s * 0.07, cx + s * 0.2) | r(cy - s * 0.4, cx + s * 0.13, cy, cx + s * 0.2)
        m |= r(cy, cx - s * 0.2, cy + s * 0.35, cx - s * 0.15) | r(cy, cx + s * 0.15, cy + s * 0.35, cx + s * 0.2)
        return m
    if cls == SOFA:
        m = r(cy - s * 0.1, cx - s * 0.45, cy + s * 0.2, cx + s * 0.45) | r(cy - s * 0.3, cx - s * 0.4, cy, cx + s * 0.4)
        m |= r(cy - s * 0.15, cx - s * 0.5, cy + s * 0.2, cx - s * 0.38)
        m |= r(cy - s * 0.15, cx + s * 0.38, cy + s * 0.2, cx + s * 0.5)
        return m
    if cls == TABLE:
        m = _trapezoid(c, cy - s * 0.15, cy + s * 0.05, cx - s * 0.4, cx + s * 0.4, -s * 0.08)
        m |= r(cy, cx - s * 0.38, cy + s * 0.35, cx - s * 0.32) | r(cy, cx + s * 0.32, cy + s * 0.35, cx + s * 0.38)
        return m
    if cls == TV:
        return r(cy - s * 0.25, cx - s * 0.33, cy + s * 0.2, cx + s * 0.33) | r(cy + s * 0.2, cx - s * 0.06,
                                                                               cy + s * 0.3, cx + s * 0.06)
    raise AssertionError(cls)


def _triangle(c: _Canvas, a: tuple[float, float], b: tuple[float, float], d: tuple[float, float]) -> np.ndarray:
    """(H,W) bool: pixels inside the triangle with (y, x) corners a, b, d."""
    def side(p, q):
        return (c.xx - q[1]) * (p[0] - q[0]) - (p[1] - q[1]) * (c.yy - q[0])
    s1, s2, s3 = side(a, b), side(b, d), side(d, a)
    neg = (s1 < 0) | (s2 < 0) | (s3 < 0)
    pos = (s1 > 0) | (s2 > 0) | (s3 > 0)
    return ~(neg & pos)


def _trapezoid(c: _Canvas, y0: float, y1: float, x0: float, x1: float, inset: float) -> np.ndarray:
    """(H,W) bool: rows y0..y1, x0..x1 at the top narrowing by ``inset`` at the bottom (widening if < 0)."""
    t = np.clip((c.yy - y0) / max(y1 - y0, 1e-3), 0, 1)
    return (c.yy >= y0) & (c.yy < y1) & (c.xx >= x0 + inset * t) & (c.xx < x1 - inset * t)


def _voc_layout(c: _Canvas, rng: np.random.Generator) -> None:
    """A background of two textured areas, each in a few pieces; decoys on it (patches that
    look like an object class, see :class:`Scene`); then 1–6 objects, each with its small parts."""
    H, W = c.h, c.w
    split = H * rng.uniform(0.3, 0.7)
    kinds = rng.choice(len(_VOC_KINDS), size=2, replace=False)
    for k, m in zip(kinds, (c.yy < split, c.yy >= split)):
        c.add_split(m, BG, int(rng.integers(2, 6)), rng, style=21 + int(k))
    if rng.random() < 0.4:  # a background blob (a window, a rug, a bush)
        k = int(rng.integers(len(_VOC_KINDS)))
        c.add(c.ellipse(H * rng.uniform(0.1, 0.9), W * rng.uniform(0.1, 0.9), H * rng.uniform(0.1, 0.25),
                        W * rng.uniform(0.1, 0.25)), BG, thing=False, style=21 + k)
    # decoys: background that looks like an object class, in its silhouette and at its typical size
    n_decoy = 0 if rng.random() < VOC_DECOYS["none"] else 1 + int(rng.poisson(VOC_DECOYS["extra"]))
    lures = rng.choice(len(_DECOY_CLASSES), size=n_decoy, p=_DECOY_P)
    for j in lures:
        lure = int(_DECOY_CLASSES[j])
        area = _DECOY_AREA[j] * VOC_DECOYS["area_scale"] * float(np.exp(rng.normal(0.0, VOC_DECOYS["area_sigma"]))) * H * W
        s = float(np.sqrt(min(area, 0.6 * H * W) / _silhouette_area(lure)))
        cy, cx = H * rng.uniform(0.1, 0.9), W * rng.uniform(0.1, 0.9)
        style = 21 + int(kinds[0] if cy < split else kinds[1])
        c.add(_voc_object(c, lure, cy, cx, s), BG, thing=False, style=style, role=ROLE_DECOY, lure=lure)
    # objects
    n = int(rng.choice(len(_VOC_N_OBJECTS), p=_VOC_N_OBJECTS)) + 1
    same = rng.random() < 0.35  # VOC images often show several objects of one class
    first = int(rng.choice(20, p=_VOC_OBJECT_P)) + 1
    sizes = np.sort(H * rng.uniform(0.8, 1.6, size=n) * n ** -0.45)
    for j in range(n):
        cls = first if (j == 0 or same) else int(rng.choice(20, p=_VOC_OBJECT_P)) + 1
        s = float(sizes[j])
        cy, cx = H * rng.uniform(0.35, 0.7), W * rng.uniform(0.2, 0.8)
        obj = _voc_object(c, cls, cy, cx, s)
        rid = c.add(obj, cls, thing=True)
        # parts: small pieces that look like another class (a bus window like a chair, a bag like a bottle)
        rate, lure_p = _VOC_PARTS.get(cls, _VOC_PARTS[0])
        ys, xs = np.nonzero(obj)
        for _ in range(int(rng.poisson(rate * VOC_PART_SCALE))):
            if ys.size < 40:
                break
            lure = int(rng.choice([k for k, _ in lure_p], p=np.array([w for _, w in lure_p]) / sum(w for _, w in lure_p)))
            area = VOC_PART_AREA * float(np.exp(rng.normal(0.0, 0.6))) * H * W
            ratio = rng.uniform(0.6, 1.6)
            rx = float(np.sqrt(area / (np.pi * ratio)))
            k = int(rng.integers(ys.size))
            m = c.ellipse(float(ys[k]), float(xs[k]), rx * ratio, rx) & obj
            if m.sum() >= 4:
                c.add(m, cls, thing=True, role=ROLE_PART, lure=lure, parent=rid)


def _silhouette_area(cls: int, _cache: dict[int, float] = {}) -> float:
    """Pixels of a class silhouette of size s = 1 (measured once at s = 200 on a large canvas)."""
    if cls not in _cache:
        c = _Canvas(600, 600)
        _cache[cls] = float(_voc_object(c, cls, 300.0, 300.0, 200.0).sum()) / 200.0**2
    return _cache[cls]


# how many objects an image shows (1..6)
_VOC_N_OBJECTS = np.array([0.38, 0.25, 0.15, 0.10, 0.07, 0.05])
# decoys per image: none with probability "none", else 1 + Poisson("extra") (real: 2.34 per image,
# 65% of images have at least one); log-normal spread of their area around the label's median
VOC_DECOYS = {"none": 0.35, "extra": 3.2, "area_sigma": 0.8, "area_scale": 1.3}
# a decoy's class (the false detection's label, real Grounded SAM frequencies) and its median area
# (share of the image, real: size depends on the label)
_DECOY_TABLE = (
    # class, share of false positives, median area share
    (15, 0.17, 0.006), (20, 0.16, 0.07), (5, 0.13, 0.003), (9, 0.10, 0.014), (11, 0.08, 0.045),
    (16, 0.07, 0.04), (7, 0.06, 0.004), (1, 0.05, 0.28), (18, 0.04, 0.2), (4, 0.027, 0.016),
    (3, 0.02, 0.008), (6, 0.016, 0.016), (2, 0.016, 0.038), (12, 0.014, 0.037), (8, 0.01, 0.03),
    (10, 0.008, 0.02), (13, 0.008, 0.02), (14, 0.008, 0.02), (17, 0.008, 0.02), (19, 0.008, 0.03),
)
_DECOY_CLASSES = np.array([t[0] for t in _DECOY_TABLE])
_DECOY_P = np.array([t[1] for t in _DECOY_TABLE]) / sum(t[1] for t in _DECOY_TABLE)
_DECOY_AREA = np.array([t[2] for t in _DECOY_TABLE])
# parts: per object class, the mean number of parts and the classes they look like (real: bus→chair,
# person→chair, bus→person, car→chair, person→bottle, diningtable→car/bottle); key 0 = other classes
VOC_PART_SCALE = 1.85
VOC_PART_AREA = 0.0018  # median area share of a part (real: 0.18% of the image)
_VOC_PARTS: dict[int, tuple[float, tuple[tuple[int, float], ...]]] = {
    0: (0.15, ((9, 0.4), (5, 0.3), (15, 0.3))),
    6: (2.2, ((9, 0.42), (15, 0.38), (20, 0.1), (1, 0.1))),  # bus
    15: (0.45, ((9, 0.55), (5, 0.3), (18, 0.15))),  # person
    7: (0.9, ((9, 0.55), (15, 0.2), (20, 0.25))),  # car
    11: (1.2, ((7, 0.35), (5, 0.5), (9, 0.15))),  # diningtable
    19: (0.7, ((20, 0.5), (1, 0.3), (6, 0.2))),  # train
    9: (0.25, ((15, 0.5), (5, 0.5))),  # chair
}


_VOC_STYLES = (
    Style((0, 0, 0)),  # background (never used: background regions use a kind's style)
    Style((204, 204, 218), noise=3, blotch=3),  # aeroplane
    Style((40, 160, 160), noise=8, blotch=2, stripes=((14, 3, 45),)),  # bicycle
    Style((176, 156, 206), noise=14, blotch=4),  # bird
    Style((222, 212, 112), noise=4, blotch=3, stripes=((12, 5, 0),)),  # boat
    Style((40, 176, 80), noise=4, blotch=2, stripes=((14, 4, 90),)),  # bottle
    Style((236, 170, 30), noise=4, blotch=3, stripes=((16, 6, 0),)),  # bus
    Style((222, 112, 40), noise=5, blotch=4),  # car
    Style((232, 152, 96), noise=8, blotch=3, stripes=((18, 4, 60),)),  # cat
    Style((150, 64, 24), noise=5, blotch=2, stripes=((14, 4, 90),)),  # chair
    Style((62, 42, 32), noise=6, blotch=18),  # cow
    Style((190, 104, 24), noise=4, blotch=3, stripes=((14, 5, 0),)),  # diningtable
    Style((196, 124, 78), noise=16, blotch=5),  # dog
    Style((112, 62, 32), noise=5, blotch=4),  # horse
    Style((30, 128, 176), noise=6, blotch=2),  # motorbike
    Style((250, 198, 170), noise=8, blotch=4),  # person
    Style((48, 100, 28), noise=22, blotch=6),  # pottedplant
    Style((236, 234, 224), noise=16, blotch=3),  # sheep
    Style((172, 40, 64), noise=4, blotch=4),  # sofa
    Style((206, 70, 112), noise=4, blotch=3, stripes=((16, 4, 0),)),  # train
    Style((24, 24, 34), noise=3, blotch=2, stripes=((14, 8, 90),)),  # tvmonitor
    Style((190, 186, 170), noise=3, blotch=6),  # 21 wall
    Style((124, 164, 84), noise=10, blotch=8),  # 22 grass
    Style((140, 180, 236), noise=2, blotch=8),  # 23 sky
    Style((160, 132, 104), noise=5, blotch=6, stripes=((8, 8, 0),)),  # 24 floor
    Style((70, 110, 150), noise=5, blotch=10, stripes=((8, 5, 10),)),  # 25 water
)
_VOC_PARTNERS: dict[int, tuple[tuple[int, float], ...]] = {
    # an object's partner is the class a whole-object mislabel names: real Grounded SAM sends them to
    # a few sinks (car→tvmonitor, cat/train/boat/bird/bicycle→aeroplane, chair→sofa), never background
    AERO: ((TV, 1.0),),
    BICYCLE: ((MBIKE, 0.6), (AERO, 0.2), (CHAIR, 0.2)),
    BIRD: ((AERO, 0.65), (TV, 0.35)),
    BOAT: ((AERO, 0.8), (TV, 0.2)),
    BOTTLE: ((TV, 0.7), (AERO, 0.3)),
    VBUS: ((AERO, 0.6), (TV, 0.2), (VTRAIN, 0.2)),
    VCAR: ((TV, 0.9), (AERO, 0.1)),
    CAT: ((AERO, 0.75), (DOG, 0.25)),
    CHAIR: ((SOFA, 0.45), (TV, 0.55)),
    COW: ((TV, 0.6), (HORSE, 0.2), (SHEEP, 0.2)),
    TABLE: ((TV, 0.4), (VCAR, 0.3), (BOTTLE, 0.3)),
    DOG: ((CAT, 0.7), (TV, 0.3)),
    HORSE: ((AERO, 0.7), (DOG, 0.3)),
    MBIKE: ((BICYCLE, 0.5), (TV, 0.5)),
    VPERSON: ((CHAIR, 0.5), (SOFA, 0.5)),
    PLANT: ((TV, 1.0),),
    SHEEP: ((TV, 0.7), (DOG, 0.3)),
    SOFA: ((TV, 0.8), (CHAIR, 0.2)),
    VTRAIN: ((AERO, 0.8), (TV, 0.2)),
    TV: ((SOFA, 1.0),),
    # background kinds (style index): the object classes a false detection on them names
    21: ((TV, 0.4), (SOFA, 0.3), (CHAIR, 0.3)),
    22: ((PLANT, 0.6), (SHEEP, 0.4)),
    23: ((AERO, 0.6), (BIRD, 0.4)),
    24: ((TABLE, 0.5), (CHAIR, 0.5)),
    25: ((BOAT, 1.0),),
}

PRESETS: dict[str, PresetSpec] = {
    "city": PresetSpec(
        name="city",
        classes=ClassInfo(names=CITY_NAMES, palette=CITY_PALETTE, fill_label=VOID, convention="cityscapes"),
        styles=_CITY_STYLES, partners=_CITY_PARTNERS, height=96, width=192, n_train=300, n_val=120,
        layout=_city_layout,
    ),
    "voc": PresetSpec(
        name="voc",
        classes=ClassInfo(names=VOC_NAMES, palette=default_palette(21), fill_label=0, convention="voc"),
        styles=_VOC_STYLES, partners=_VOC_PARTNERS, height=96, width=128, n_train=400, n_val=120,
        layout=_voc_layout,
    ),
}

# latent z ~ Beta(1, Z_BETA): most regions are typical, a few look much like their partner
Z_BETA = 2.5
# how far z = 1 pulls a region's colour/texture towards its partner's
PULL = 0.7
# latent range of part and decoy regions (``voc``): they look clearly like their lure class
LURE_Z = (0.75, 1.0)
_SPLIT_CODE = {"train": 0, "val": 1}
_PRESET_CODE = {"city": 11, "voc": 22}


def scene_rng(seed: int, preset: str, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one image: independent of every other (seed, preset, split, index, stream)."""
    entropy = [seed, _PRESET_CODE[preset], _SPLIT_CODE[split], index, stream]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def make_scene(spec: PresetSpec, rng: np.random.Generator, h: int, w: int) -> Scene:
    """Draw one scene: layout, then each region's partner and latent ``z``."""
    c = _Canvas(h, w)
    spec.layout(c, rng)
    n = len(c.cls)
    present = np.bincount(c.region.ravel(), minlength=n) > 0
    remap = np.cumsum(present) - 1
    region = remap[c.region].astype(np.int32)
    cls = np.array(c.cls, np.int64)[present]
    style = np.array(c.style, np.int64)[present]
    thing = np.array(c.thing, bool)[present]
    partner = np.zeros(cls.shape, np.int64)
    for j in range(cls.size):
        key = int(style[j]) if int(style[j]) >= spec.classes.num_classes else int(cls[j])
        options = spec.partners[key]
        p = np.array([o[1] for o in options])
        partner[j] = options[int(rng.choice(len(options), p=p / p.sum()))][0]
    z = rng.beta(1.0, Z_BETA, size=cls.size).astype(np.float32)
    # parts and decoys look like their lure class, by construction
    role = np.array(c.role, np.int64)[present]
    lure = np.array(c.lure, np.int64)[present]
    special = role != ROLE_PLAIN
    partner[special] = lure[special]
    z[special] = rng.uniform(LURE_Z[0], LURE_Z[1], size=int(special.sum())).astype(np.float32)
    parent = np.array(c.parent, np.int64)[present]
    has_parent = parent >= 0
    parent[has_parent] = np.where(present[parent[has_parent]], remap[parent[has_parent]], -1)
    return Scene(region=region, cls=cls.astype(np.uint8), thing=thing, style=style.astype(np.int16),
                 partner=partner.astype(np.uint8), z=z, role=role.astype(np.uint8), parent=parent.astype(np.int32))


def _style_table(spec: PresetSpec) -> dict[str, np.ndarray]:
    """Styles as arrays: colour (S,3), noise (S,), blotch (S,), stripes (S,2,3)."""
    s = len(spec.styles)
    stripes = np.zeros((s, 2, 3), np.float32)
    stripes[:, :, 1] = 1.0
    for i, st in enumerate(spec.styles):
        for j, (a, period, angle) in enumerate(st.stripes[:2]):
            stripes[i, j] = (a, period, np.deg2rad(angle))
    return {
        "colour": np.array([st.colour for st in spec.styles], np.float32),
        "noise": np.array([st.noise for st in spec.styles], np.float32),
        "blotch": np.array([st.blotch for st in spec.styles], np.float32),
        "stripes": stripes,
    }


def render(spec: PresetSpec, table: dict[str, np.ndarray], scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The (H,W,3) uint8 image of a scene.

    Each region's parameters are its style's, pulled towards its partner's style by
    PULL·z, plus a per-region colour jitter; per-pixel noise, low-frequency blotches
    and stripes are drawn per image; a global gain and a light blur finish it.
    """
    h, w = scene.region.shape
    n = scene.n_regions
    cstyle = scene.style.astype(np.int64)
    pstyle = scene.partner.astype(np.int64)
    # the partner's look: for background-kind partners of VOC the partner is a class style
    a = (PULL * scene.z)[:, None]
    colour = (1 - a) * table["colour"][cstyle] + a * table["colour"][pstyle] + rng.normal(0, 7, (n, 3))
    a1 = a[:, 0]
    noise = (1 - a1) * table["noise"][cstyle] + a1 * table["noise"][pstyle]
    blotch = (1 - a1) * table["blotch"][cstyle] + a1 * table["blotch"][pstyle]
    # stripes: keep the own pattern fading out and the partner's fading in
    own, other = table["stripes"][cstyle], table["stripes"][pstyle]
    amps = np.concatenate([own[:, :, 0] * (1 - a), other[:, :, 0] * a], 1)  # (n,4)
    periods = np.concatenate([own[:, :, 1], other[:, :, 1]], 1) * (w / spec.width)
    angles = np.concatenate([own[:, :, 2], other[:, :, 2]], 1)
    phase = rng.uniform(0, 2 * np.pi, (n, 4)).astype(np.float32)
    reg = scene.region
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = colour[reg].astype(np.float32)  # (H,W,3)
    stripe = np.zeros((h, w), np.float32)
    for j in range(4):
        if not np.any(amps[:, j] > 0):
            continue
        ang, per = angles[reg, j], periods[reg, j]
        proj = xx * np.cos(ang) + yy * np.sin(ang)
        stripe += amps[reg, j] * np.sin(2 * np.pi * proj / np.maximum(per, 1.0) + phase[reg, j])
    img += stripe[..., None]
    img += noise[reg][..., None] * rng.standard_normal((h, w, 3)).astype(np.float32)
    low = rng.standard_normal((max(2, h // 12), max(2, w // 12), 3)).astype(np.float32)
    low = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img += blotch[reg][..., None] * low
    img = img * rng.uniform(0.88, 1.12) + rng.normal(0, 4, 3)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8)


def ground_truth(spec: PresetSpec, scene: Scene) -> np.ndarray:
    """(H,W) uint8 labels of a scene; for ``voc``, a 1-px void outline around objects (as VOC has)."""
    gt = scene.cls[scene.region]
    if spec.classes.convention == "voc":
        thing_px = scene.thing[scene.region]
        edge = np.zeros(gt.shape, bool)
        edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
        edge[:, :-1] |= gt[:, 1:] != gt[:, :-1]
        edge[1:, :] |= gt[1:, :] != gt[:-1, :]
        edge[:-1, :] |= gt[1:, :] != gt[:-1, :]
        # the outline lies on the object side of its boundary
        gt = np.where(edge & thing_px, np.uint8(VOID), gt)
    return gt.astype(np.uint8)


class SyntheticSource(Source):
    """The built-in benchmark (SPEC §4): seeded scenes rendered on demand, with a small cache."""

    CACHE = 1024  # images (≈150 kB each with ground truth and scene); the default sets fit
    # one cache per (preset, seed, size), shared by the sources of a process: every stage opens its own
    # source, and re-rendering the set per stage cost ≈ 12% of `a2lc demo` (docs/performance.md)
    _CACHES: dict[tuple, OrderedDict] = {}
    # the pseudolabel stage reads images on a reader thread while the labeler reads scenes on the main
    # thread: the cache's get/move/evict are done under this lock (rendering is not)
    _LOCK = threading.Lock()

    def __init__(self, *, preset: str = "city", seed: int = 0, n_train: int | None = None, n_val: int | None = None,
                 height: int | None = None, width: int | None = None):
        if preset not in PRESETS:
            raise A2LCError(f"unknown synthetic preset {preset!r} (choose from {', '.join(PRESETS)})")
        self.spec = PRESETS[preset]
        self.preset = preset
        self.seed = int(seed)
        self.classes = self.spec.classes
        self.counts = {"train": n_train or self.spec.n_train, "val": n_val or self.spec.n_val}
        self.height = height or self.spec.height
        self.width = width or self.spec.width
        self._table = _style_table(self.spec)
        self._cache: OrderedDict[tuple[str, int], tuple[Scene, np.ndarray, np.ndarray]] = \
            SyntheticSource._CACHES.setdefault((preset, self.seed, self.height, self.width), OrderedDict())

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every rendered image (of every source of this process)."""
        cls._CACHES.clear()

    @classmethod
    def from_config(cls, cfg: Config) -> "SyntheticSource":
        s = cfg.source
        src = cls(preset=s.preset or "city", seed=cfg.seed, n_train=s.n_train, n_val=s.n_val, height=s.height, width=s.width)
        if s.fill_label is not None:  # --set source.fill_label=N
            src.classes = replace(src.classes, fill_label=int(s.fill_label))
        return src

    def _check(self, split: str, index: int | None = None) -> None:
        if split not in SPLITS:
            raise A2LCError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        if index is not None and not 0 <= index < self.counts[split]:
            raise A2LCError(f"{split} image {index} does not exist (the split has {self.counts[split]})")

    def _get(self, split: str, index: int) -> tuple[Scene, np.ndarray, np.ndarray]:
        key = (split, int(index))
        with self._LOCK:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        self._check(split, index)
        rng = scene_rng(self.seed, self.preset, split, int(index))
        scene = make_scene(self.spec, rng, self.height, self.width)
        image = render(self.spec, self._table, scene, rng)
        gt = ground_truth(self.spec, scene)
        for arr in (scene.region, image, gt):
            arr.setflags(write=False)
        out = (scene, image, gt)
        with self._LOCK:
            self._cache[key] = out
            if len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        return out

    def scene(self, split: str, index: int) -> Scene:
        """The generator's description of an image (regions, classes, partners, latents)."""
        return self._get(split, index)[0]

    def names(self, split: str) -> list[str]:
        self._check(split)
        return [f"{self.preset}_{split}_{i:05d}" for i in range(self.counts[split])]

    def image(self, split: str, index: int) -> np.ndarray:
        return self._get(split, index)[1].copy()

    def label(self, split: str, index: int) -> np.ndarray:
        return self._get(split, index)[2].copy()

    def size(self, split: str, index: int) -> tuple[int, int]:
        self._check(split, index)
        return self.height, self.width

    def describe(self) -> str:
        return (f"synthetic {self.preset} benchmark (seed {self.seed}): {self.counts['train']} train + "
                f"{self.counts['val']} val images of {self.width}x{self.height}")
