"""PNG views of one queried mask for the annotation page: the whole image with the mask
highlighted, and a zoomed crop of its neighbourhood with the mask outlined."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ..answers_io import render_mask
from ..state import Dataset

HIGHLIGHT = np.array([255, 0, 255], np.float32)  # magenta, as in the bundles' outlines


def mask_views(img: np.ndarray, mask: np.ndarray, box: np.ndarray) -> tuple[bytes, bytes]:
    """(full, crop) PNG bytes for one mask.

    img: (H,W,3) uint8 RGB.  mask: (H,W) bool.  box: (4,) x0,y0,x1,y1 (exclusive).
    full: the image (fit to ≤640 px, small images enlarged) with the mask tinted and
    outlined and its neighbourhood boxed; crop: the neighbourhood enlarged, outlined only
    (so the texture under the mask stays visible).
    """
    import cv2

    tinted = img.astype(np.float32)
    tinted[mask] = 0.55 * tinted[mask] + 0.45 * HIGHLIGHT
    crop, _ = render_mask(img, mask, box, cv2)
    _, full = render_mask(tinted.round().astype(np.uint8), mask, box, cv2)
    return _png(full, cv2), _png(crop, cv2)


def _png(rgb: np.ndarray, cv2) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - encoding a uint8 RGB array does not fail
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


class ViewCache:
    """Renders and caches the views of the queried masks (a few hundred KB each at most).

    read_image(i) -> (H,W,3) uint8 RGB of train image i; ``ds`` supplies segment maps.
    Rendering is serialised (one h5py file handle, one image cache).
    """

    def __init__(self, ds: Dataset, read_image: Callable[[int], np.ndarray], *, size: int = 64):
        self.ds, self.read_image, self.size = ds, read_image, size
        self.views: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()
        self.images: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, mask_id: int, image: int, box: np.ndarray) -> tuple[bytes, bytes]:
        with self.lock:
            if mask_id in self.views:
                self.views.move_to_end(mask_id)
                return self.views[mask_id]
            if image not in self.images:
                self.images[image] = (np.asarray(self.read_image(image), np.uint8), self.ds.segment(image))
                while len(self.images) > 4:
                    self.images.popitem(last=False)
            img, seg = self.images[image]
            out = mask_views(img, seg == mask_id, box)
            self.views[mask_id] = out
            while len(self.views) > self.size:
                self.views.popitem(last=False)
            return out
