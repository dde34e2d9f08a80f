"""Fingerprints of the source images ``dataset.h5`` was built from, and THE verified reader
of train images that every stage reading source pixels goes through.

``dataset.h5`` pairs each train image (by index) with its masks and label maps. If
the dataset folder changes after ``a2lc pseudolabel`` (files renamed, replaced,
added, removed), index ``i`` would silently pair one image's labels with another
image's pixels. So ``pseudolabel`` records, per image, its name, its size (H,W)
and a cheap content signature (:func:`image_signature`), and :class:`TrainImages`
checks them: the whole name list when a stage starts, the size and signature of
each image as it is read. A mismatch is a one-line error telling how to rebuild.

Workspaces written before signatures existed (no ``images/signature`` in
``dataset.h5``) still work: names and sizes are checked, the content is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .data.base import Source
from .errors import A2LCError

SIGNATURE_GRID = 8  # samples per side: an 8×8 grid of RGB pixels, 192 bytes per image
SIGNATURE_TOLERANCE = 6.0  # mean |difference| (0..255) above which two signatures are different images
REBUILD = (
    "rerun `a2lc pseudolabel --force` (or restore the dataset folder, or the config's source settings and seed, as "
    "they were: `a2lc status` names a changed setting)")


def image_signature(image: np.ndarray) -> np.ndarray:
    """(8,8,3) uint8: the pixels of ``image`` (H,W,3) uint8 at the centres of an 8×8 grid of cells.

    Point samples, not block means: reading 64 pixels costs microseconds whatever the
    image size, where a full pass would cost a few percent of decoding it.
    """
    h, w = image.shape[:2]
    sig = np.asarray(image).take(_grid(h), axis=0).take(_grid(w), axis=1)
    if sig.ndim == 2:
        sig = np.repeat(sig[:, :, None], 3, axis=2)
    return np.ascontiguousarray(sig[:, :, :3], dtype=np.uint8)


@lru_cache(maxsize=64)
def _grid(n: int) -> np.ndarray:
    """Sample positions ⌊(k + ½)·n/8⌋, k = 0..7, in integers: ⌊(2k + 1)·n/16⌋."""
    return (np.arange(SIGNATURE_GRID, dtype=np.int64) * 2 + 1) * n // (2 * SIGNATURE_GRID)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (0..255) of two (8,8,3) signatures.

    Re-decoding the same file (another libjpeg, another Pillow) moves a sample by a
    level or two; two different photographs differ by tens of levels on average.
    """
    import cv2  # one C call (L1 norm of uint8 arrays) instead of four numpy passes

    a, b = np.ascontiguousarray(a, np.uint8), np.ascontiguousarray(b, np.uint8)
    return float(cv2.norm(a, b, cv2.NORM_L1)) / a.size


def check_names(current: Sequence[str], built: Sequence[str], *, split: str = "train") -> None:
    """The source's image names must be those ``dataset.h5`` was built from, in the same order."""
    for i, (now, then) in enumerate(zip(current, built)):
        if now != then:
            raise A2LCError(f"{split} image {i} is {now!r} but dataset.h5 was built from {then!r}; {REBUILD}")
    if len(current) != len(built):
        raise A2LCError(
            f"the dataset has {len(current)} {split} images but dataset.h5 was built from {len(built)}; {REBUILD}"
        )


class TrainImages:
    """``read(i)`` → train image ``i``, (H,W,3) uint8 RGB, verified against ``dataset.h5``.

    Built from the source and the dataset's recorded names, sizes (H,W) and signatures
    (``None`` for a workspace written before signatures). Construction checks the
    name list (a rename, insertion or removal is caught before any work); each read
    checks the image's size and signature. Holds plain arrays only, so it can be
    sent to DataLoader worker processes.
    """

    def __init__(self, source: Source, *, names: Sequence[str], shapes: np.ndarray,
                 signatures: np.ndarray | None, signed: np.ndarray | None):
        check_names(source.names("train"), names)
        self.source = source
        self.names = list(names)
        self.shapes = [(int(h), int(w)) for h, w in np.asarray(shapes, np.int64).reshape(-1, 2)]
        self.signatures = signatures
        self.signed = signed

    @classmethod
    def of(cls, source: Source, ds) -> "TrainImages":
        """From an open :class:`a2lc_cli.state.Dataset`."""
        sig = ds.image_signatures()
        return cls(source, names=ds.names, shapes=np.stack([ds.heights, ds.widths], 1),
                   signatures=None if sig is None else sig[0], signed=None if sig is None else sig[1])

    def __call__(self, i: int) -> np.ndarray:
        image = self.source.image("train", i)
        self.verify(i, image)
        return image

    def verify(self, i: int, image: np.ndarray) -> None:
        """Raise A2LCError unless ``image`` is the train image ``i`` that dataset.h5 was built from."""
        h, w = self.shapes[i]
        if image.shape[:2] != (h, w):
            raise A2LCError(
                f"train image {i} {self.names[i]!r} is {image.shape[1]}x{image.shape[0]} but dataset.h5 was built "
                f"from a {w}x{h} image; {REBUILD}"
            )
        if self.signatures is not None and bool(self.signed[i]):
            d = signature_distance(image_signature(image), self.signatures[i])
            if d > SIGNATURE_TOLERANCE:
                raise A2LCError(
                    f"train image {i} {self.names[i]!r} is not the image dataset.h5 was built from "
                    f"(its pixels changed since pseudolabel: mean difference {d:.0f}/255 at the sampled points); {REBUILD}"
                )
