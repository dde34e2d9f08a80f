"""The common part of the on-disk sources (cityscapes, voc, folder): an index of image/label files.

A concrete source builds, at construction, a sorted list of :class:`Entry` per
split (pairing validated, errors naming the file) and hands it to
:class:`FileSource`, which reads and validates the files on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import A2LCError
from .base import SPLITS, VOID, ClassInfo, Source, check_label_map
from .io import image_size, read_label_png, read_rgb


@dataclass(frozen=True)
class Entry:
    """One image of a split.

    name: stable identifier (e.g. ``aachen/aachen_000000_000019``).
    image: path of the image file.  label: path of its label PNG, or None.
    lut: optional (256,) uint8 table applied to the label's values (e.g. labelId → trainId).
    """

    name: str
    image: Path
    label: Path | None = None
    lut: np.ndarray | None = None


def dataset_root(cfg: Config) -> Path:
    """The configured dataset root, which must be an existing directory."""
    if not cfg.source.root:
        kind = cfg.source.kind
        raise A2LCError(f"source {kind!r} needs a dataset root: a2lc init --source {kind} --root PATH")
    root = Path(cfg.source.root).expanduser()
    if not root.is_dir():
        raise A2LCError(f"dataset root {root} does not exist or is not a directory")
    return root


def resolve_fill_label(cfg: Config, default: int, num_classes: int) -> int:
    """``cfg.source.fill_label`` when set (validated: a class or 255), else ``default``."""
    fill = cfg.source.fill_label
    if fill is None:
        return default
    if fill != VOID and not 0 <= fill < num_classes:
        raise A2LCError(f"source.fill_label {fill} is not a class (0..{num_classes - 1}) or 255")
    return int(fill)


def check_pairs(images: dict[str, Path], labels: dict[str, Path], *, image_hint: str, label_hint: str) -> None:
    """Every image has a label and every label an image; errors name the first unpaired file.

    images, labels: key → path, keyed by the same stem. ``*_hint`` say where the
    counterpart was expected, e.g. ``"gtFine/train/<city>/<stem>_gtFine_labelTrainIds.png"``.
    """
    for key in sorted(images.keys() - labels.keys()):
        raise A2LCError(f"{images[key]}: image has no label (expected {label_hint.format(key=key)})")
    for key in sorted(labels.keys() - images.keys()):
        raise A2LCError(f"{labels[key]}: label has no image (expected {image_hint.format(key=key)})")


class FileSource(Source):
    """A source backed by image and label files listed per split at construction."""

    kind = "files"

    def __init__(self, root: Path, classes: ClassInfo, entries: dict[str, list[Entry]], has_gt: dict[str, bool]):
        self.root = Path(root)
        self.classes = classes
        self._entries = {s: list(entries.get(s, [])) for s in SPLITS}
        self._has_gt = {s: bool(has_gt.get(s, False)) for s in SPLITS}

    def _entry(self, split: str, index: int) -> Entry:
        if split not in self._entries:
            raise A2LCError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        entries = self._entries[split]
        if not 0 <= index < len(entries):
            raise A2LCError(f"{split} image index {index} out of range 0..{len(entries) - 1}")
        return entries[index]

    def names(self, split: str) -> list[str]:
        if split not in self._entries:
            raise A2LCError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        return [e.name for e in self._entries[split]]

    def has_gt(self, split: str) -> bool:
        return self._has_gt.get(split, False)

    def image(self, split: str, index: int) -> np.ndarray:
        """(H,W,3) uint8 RGB."""
        return read_rgb(self._entry(split, index).image)

    def label(self, split: str, index: int) -> np.ndarray | None:
        """(H,W) uint8 ground truth (255 void), validated against the class count and the image size."""
        e = self._entry(split, index)
        if not self._has_gt[split] or e.label is None:
            return None
        raw = read_label_png(e.label)
        if e.lut is not None:
            if raw.dtype != np.uint8:
                raise A2LCError(f"{e.label}: expected an 8-bit label PNG (got {raw.dtype})")
            raw = e.lut[raw]
        label = check_label_map(raw, self.classes.num_classes, where=str(e.label))
        h, w = image_size(e.image)
        if label.shape != (h, w):
            raise A2LCError(
                f"{e.label}: label is {label.shape[1]}x{label.shape[0]} but its image {e.image} is {w}x{h}"
            )
        return label

    def size(self, split: str, index: int) -> tuple[int, int]:
        """(H, W) from the image file's header (no decode)."""
        return image_size(self._entry(split, index).image)

    def image_path(self, split: str, index: int) -> str:
        p = self._entry(split, index).image
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def label_path(self, split: str, index: int) -> Path | None:
        """Path of the ground-truth file of an image (None without ground truth)."""
        e = self._entry(split, index)
        return e.label if self._has_gt[split] else None

    def describe(self) -> str:
        counts = ", ".join(
            f"{len(self._entries[s])} {s}" + ("" if self._has_gt[s] or not self._entries[s] else " (no labels)")
            for s in SPLITS
        )
        return f"{self.kind} at {self.root}: {counts} images, {self.classes.num_classes} classes"
