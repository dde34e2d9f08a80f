"""Per-mask reductions of a pseudo-label map (the dataset writer's algorithms; no file I/O).

- :func:`mask_majority`: each mask's majority label, void not voting;
- ``_bboxes``: each mask's bounding box;
- :func:`value_counts`: a fast histogram of uint8 values.
"""

from __future__ import annotations

import numpy as np

from .data.base import VOID


def mask_majority(segment: np.ndarray, labels: np.ndarray, n_masks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-mask majority label with void (255) not voting.

    segment: (P,) int mask index in [0, n_masks), pixels outside any mask already removed.
    labels: (P,) uint8 labels of those pixels.
    Returns (majority (n,) uint8, votes of the majority (n,) int64, void pixel count (n,) int64).
    A mask whose void pixels outnumber its non-void pixels gets 255 (mostly void).
    """
    hist = np.bincount(segment.astype(np.int64) * 256 + labels, minlength=n_masks * 256).reshape(n_masks, 256)
    void = hist[:, VOID].copy()
    hist[:, VOID] = 0
    majority = hist.argmax(1).astype(np.uint8)
    votes = hist.max(1)
    nonvoid = hist.sum(1)
    majority[void > nonvoid] = VOID
    majority[nonvoid == 0] = VOID
    return majority, votes, void


def _bboxes(segment: np.ndarray, n_masks: int) -> np.ndarray:
    """(n,4) int32 x0,y0,x1,y1 (exclusive) of each local mask in a (H,W) segment map."""
    h, w = segment.shape
    flat = segment.ravel()
    keep = flat >= 0
    ids = flat[keep]
    idx = np.flatnonzero(keep)
    ys, xs = idx // w, idx % w
    box = np.empty((n_masks, 4), dtype=np.int32)
    box[:, 0] = w
    box[:, 1] = h
    box[:, 2] = 0
    box[:, 3] = 0
    np.minimum.at(box[:, 0], ids, xs)
    np.minimum.at(box[:, 1], ids, ys)
    np.maximum.at(box[:, 2], ids, xs + 1)
    np.maximum.at(box[:, 3], ids, ys + 1)
    return box


def value_counts(values: np.ndarray) -> np.ndarray:
    """(256,) int64 count of each value of a uint8 array (OpenCV's histogram: ≈4× ``np.bincount``).

    Counted in slices of 2^24 values, below which float32 bin counts are exact.
    """
    flat = np.ascontiguousarray(values, np.uint8).reshape(-1)
    out = np.zeros(256, np.int64)
    import cv2

    for s in range(0, flat.size, 1 << 24):
        part = flat[s:s + (1 << 24)].reshape(1, -1)
        out += cv2.calcHist([part], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return out
