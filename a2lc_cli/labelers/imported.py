"""The ``import`` labeler: existing pseudo-label PNGs (and optional mask-id PNGs) become round 0.

Files, for every train image with source name ``<name>`` (which may contain ``/``)::

    <import_dir>/<name>.png   pseudo-labels: 8-bit grey or palette PNG of class indices, 255 = unlabeled
    <mask_dir>/<name>.png     optional mask ids: 8- or 16-bit PNG, 0 = no mask, k ≥ 1 = mask k

The round-0 pixel labels are the pseudo-label PNG as it is. The correction units
are the mask-id PNG's masks, or without one the connected components
(8-connectivity) of equal label. Pixels labelled 255 belong to no unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import ui
from ..config import Config
from ..data.base import VOID, Source, check_label_map
from ..data.discover import find_files
from ..data.io import image_size, read_label_png, read_mask_ids
from ..errors import A2LCError
from ..state import ImageProposal
from .base import Labeler


def label_components(label: np.ndarray, *, connectivity: int = 8) -> np.ndarray:
    """Connected components of equal label as a segment map.

    label: (H,W) uint8 class indices, 255 = unlabeled.
    Returns (H,W) int32: component index 0..k-1 per pixel, -1 on 255 pixels.
    One OpenCV pass per class present (no loop over pixels); components are
    numbered class by class in ascending class order, then in OpenCV's raster order.
    """
    segment = np.full(label.shape, -1, np.int32)
    offset = 0
    for c in np.unique(label):
        if c == VOID:
            continue
        binary = (label == c).view(np.uint8)
        n, comp = cv2.connectedComponents(binary, connectivity=connectivity, ltype=cv2.CV_32S)
        inside = comp > 0
        segment[inside] = comp[inside] + (offset - 1)
        offset += n - 1
    return segment


def segment_from_ids(ids: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Segment map from a mask-id map: id k ≥ 1 → local mask k-1; id 0 and label-255 pixels → -1.

    ids: (H,W) int mask ids; label: (H,W) uint8. Returns (H,W) int32.
    """
    segment = ids.astype(np.int32) - 1
    segment[label == VOID] = -1
    return segment


class ImportLabeler(Labeler):
    """Round 0 from existing pseudo-label PNGs (and optional mask-id PNGs)."""

    name = "import"

    def __init__(self, cfg: Config, source: Source):
        self.cfg = cfg
        self.source = source
        pl = cfg.pseudolabel
        self.import_dir = Path(pl.import_dir).expanduser() if pl.import_dir else None
        self.mask_dir = Path(pl.mask_dir).expanduser() if pl.mask_dir else None
        self.names = source.names("train")
        self._name_set = frozenset(self.names)
        self._found: dict[Path, dict[str, Path]] = {}

    def _find(self, folder: Path, index: int) -> Path:
        """``<folder>/<name>.png`` of train image ``index``, found by the shared discovery rule
        (extension case-insensitive, hidden/OS files skipped, files of no train image not looked at);
        the expected path when absent."""
        if folder not in self._found:  # only the train images' files: others (val, stray files) are never read
            self._found[folder] = find_files(folder, (".png",), what="PNG", only=self._name_set)
        name = self.names[index]
        return self._found[folder].get(name, folder / f"{name}.png")

    def label_path(self, index: int) -> Path:
        assert self.import_dir is not None
        return self._find(self.import_dir, index)

    def mask_path(self, index: int) -> Path | None:
        return None if self.mask_dir is None else self._find(self.mask_dir, index)

    def check(self) -> None:
        """Every train image has its pseudo-label PNG (and mask-id PNG), of the image's size."""
        if self.import_dir is None:
            raise A2LCError("the import labeler needs a folder of pseudo-label PNGs: --import-dir DIR")
        for what, d in (("--import-dir", self.import_dir), ("--mask-dir", self.mask_dir)):
            if d is not None and not d.is_dir():
                raise A2LCError(f"{what} {d} does not exist or is not a directory")
        for i in range(len(self.names)):
            lp = self.label_path(i)
            if not lp.is_file():
                raise A2LCError(f"{lp}: pseudo-label missing for train image {self.names[i]!r}")
            mp = self.mask_path(i)
            if mp is not None and not mp.is_file():
                raise A2LCError(f"{mp}: mask-id PNG missing for train image {self.names[i]!r}")
        for i in ui.progress(range(len(self.names)), "checking imported files"):
            h, w = self.source.size("train", i)
            for p in (self.label_path(i), self.mask_path(i)):
                if p is None:
                    continue
                ph, pw = image_size(p, what="pseudo-label" if p == self.label_path(i) else "mask-id map")
                if (ph, pw) != (h, w):
                    raise A2LCError(f"{p}: is {pw}x{ph} but its image {self.names[i]!r} is {w}x{h}")

    def meta(self) -> dict[str, Any]:
        return {
            "labeler": self.name,
            "import_dir": str(self.import_dir.resolve()) if self.import_dir else None,
            "mask_dir": str(self.mask_dir.resolve()) if self.mask_dir else None,
        }

    def propose(self, index: int, image: np.ndarray, gt: np.ndarray | None) -> ImageProposal:
        """Read image ``index``'s pseudo-labels (and mask ids); ``gt`` is not looked at."""
        lp = self.label_path(index)
        label = check_label_map(read_label_png(lp, what="pseudo-label"), self.source.classes.num_classes, where=str(lp))
        if label.shape != image.shape[:2]:
            raise A2LCError(f"{lp}: is {label.shape[1]}x{label.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}")
        mp = self.mask_path(index)
        if mp is None:
            segment = label_components(label)
        else:
            ids = read_mask_ids(mp)
            if ids.shape != label.shape:
                raise A2LCError(f"{mp}: is {ids.shape[1]}x{ids.shape[0]} but its image is {label.shape[1]}x{label.shape[0]}")
            segment = segment_from_ids(ids, label)
        return ImageProposal(segment=segment, label0=label)
