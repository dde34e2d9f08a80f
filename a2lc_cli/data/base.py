"""What every data source provides: class list, train/val image names, images and ground truth."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import A2LCError

VOID = 255
SPLITS = ("train", "val")
Convention = Literal["cityscapes", "voc", "plain"]


@dataclass(frozen=True)
class ClassInfo:
    """The label space of a dataset.

    names: class names, index = label value (C of them; 255 is void/unlabeled).
    palette: (C,3) uint8 RGB colours for visualisation and palette PNGs.
    fill_label: label of pixels no correction unit covers (255 Cityscapes-like, 0 VOC-like).
    convention: how exported label PNGs are written ("cityscapes" trainId, "voc" palette, "plain" grey).
    """

    names: tuple[str, ...]
    palette: np.ndarray = field(repr=False)
    fill_label: int = VOID
    convention: Convention = "plain"

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Class index of a name (case-insensitive), or 255 for 'void'."""
        lowered = name.strip().lower()
        if lowered in ("void", "ignore", "255"):
            return VOID
        for i, n in enumerate(self.names):
            if n.lower() == lowered:
                return i
        raise A2LCError(f"unknown class name {name!r} (known: {', '.join(self.names)}, void)")

    def name(self, label: int) -> str:
        return "void" if label == VOID else self.names[label]


def default_palette(n: int) -> np.ndarray:
    """The PASCAL VOC colour map for ``n`` classes, (n,3) uint8."""
    pal = np.zeros((max(n, 256), 3), dtype=np.uint8)
    for i in range(pal.shape[0]):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal[:n]


def check_label_map(label: np.ndarray, num_classes: int, *, where: str) -> np.ndarray:
    """Validate a (H,W) label map: integer values < C or 255. Returns it as uint8."""
    if label.ndim != 2:
        raise A2LCError(f"{where}: label map must be single-channel (got shape {label.shape})")
    if not np.issubdtype(label.dtype, np.integer):
        raise A2LCError(f"{where}: label map must hold integers (got {label.dtype})")
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != VOID) | (values < 0)]
    if bad.size:
        raise A2LCError(
            f"{where}: label value {int(bad[0])} is not a class (classes are 0..{num_classes - 1}, 255 = void)"
        )
    return label.astype(np.uint8, copy=False)


def check_same_size(image: np.ndarray, label: np.ndarray, *, where: str) -> None:
    """Image (H,W,3) and label (H,W) must have the same height and width."""
    if image.shape[:2] != label.shape[:2]:
        raise A2LCError(
            f"{where}: image is {image.shape[1]}x{image.shape[0]} but its label is {label.shape[1]}x{label.shape[0]}"
        )


class Source(ABC):
    """A dataset: images (H,W,3) uint8 RGB and optional ground truth (H,W) uint8 per split."""

    classes: ClassInfo

    @abstractmethod
    def names(self, split: str) -> list[str]:
        """Stable identifiers (stems) of the split's images, in dataset order."""

    @abstractmethod
    def image(self, split: str, index: int) -> np.ndarray:
        """The image, (H,W,3) uint8 RGB."""

    @abstractmethod
    def label(self, split: str, index: int) -> np.ndarray | None:
        """Ground truth, (H,W) uint8 with 255 = void, validated; ``None`` when the split has none."""

    def has_gt(self, split: str) -> bool:
        """Whether ground truth exists for the split."""
        return True

    def size(self, split: str, index: int) -> tuple[int, int]:
        """(H, W) of an image; sources override this when it is cheaper than decoding."""
        h, w = self.image(split, index).shape[:2]
        return int(h), int(w)

    def image_path(self, split: str, index: int) -> str:
        """Path of the image file relative to the dataset root ("" when generated)."""
        return ""

    def describe(self) -> str:
        """One line for ``a2lc status``."""
        return type(self).__name__
