"""The Cityscapes folder layout (gtFine, 19 trainId classes).

Layout under the dataset root::

    leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png
    gtFine/{train,val}/<city>/<stem>_gtFine_labelTrainIds.png   (preferred)
    gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png        (converted with LABEL_TO_TRAIN)

Image names are ``<city>/<stem>``. A split without a ``gtFine/<split>`` folder
(or with no label files in it) has no ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import A2LCError
from .base import SPLITS, VOID, ClassInfo
from .discover import find_files
from .files import Entry, FileSource, check_pairs, dataset_root, resolve_fill_label

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAINID_SUFFIX = "_gtFine_labelTrainIds.png"
LABELID_SUFFIX = "_gtFine_labelIds.png"

# (trainId order) name, RGB colour — cityscapesScripts helpers/labels.py
CITYSCAPES_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
)

# labelId -> trainId for the ids that have one (cityscapesScripts helpers/labels.py);
# every other id (unlabeled, ego vehicle, ..., parking, rail track, guard rail,
# bridge, tunnel, polegroup, caravan, trailer, license plate) maps to 255.
_TRAIN_ID_OF = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
LABEL_TO_TRAIN = np.full(256, VOID, np.uint8)
LABEL_TO_TRAIN[list(_TRAIN_ID_OF)] = list(_TRAIN_ID_OF.values())
LABEL_TO_TRAIN.setflags(write=False)


def cityscapes_classes(fill_label: int = VOID) -> ClassInfo:
    """The 19 Cityscapes trainId classes with their official colours."""
    return ClassInfo(
        names=tuple(n for n, _ in CITYSCAPES_CLASSES),
        palette=np.array([c for _, c in CITYSCAPES_CLASSES], np.uint8),
        fill_label=fill_label,
        convention="cityscapes",
    )


def _index(folder: Path, suffix: str) -> dict[str, Path]:
    """``<city>/<stem>`` → path for every ``<folder>/<city>/<stem><suffix>``."""
    return find_files(folder, (suffix,), depth=2, what="file")


class CityscapesSource(FileSource):
    """Cityscapes (fine annotations): train/val images with trainId ground truth."""

    kind = "cityscapes"

    @classmethod
    def from_config(cls, cfg: Config) -> "CityscapesSource":
        root = dataset_root(cfg)
        classes = cityscapes_classes(resolve_fill_label(cfg, VOID, len(CITYSCAPES_CLASSES)))
        if not (root / "leftImg8bit" / "train").is_dir():
            raise A2LCError(
                f"{root}: not a Cityscapes root ({root / 'leftImg8bit' / 'train'} is missing; "
                "expected leftImg8bit/{train,val}/<city>/*_leftImg8bit.png)"
            )
        entries: dict[str, list[Entry]] = {}
        has_gt: dict[str, bool] = {}
        for split in SPLITS:
            images = _index(root / "leftImg8bit" / split, IMAGE_SUFFIX)
            if split == "train" and not images:
                raise A2LCError(f"{root / 'leftImg8bit' / 'train'}: no <city>/*{IMAGE_SUFFIX} images found")
            gt_dir = root / "gtFine" / split
            train_ids = _index(gt_dir, TRAINID_SUFFIX)
            label_ids = _index(gt_dir, LABELID_SUFFIX)
            has_gt[split] = bool(images) and bool(train_ids or label_ids)
            if has_gt[split]:
                labels = {**label_ids, **train_ids}  # trainIds win where both exist
                check_pairs(
                    images, labels,
                    image_hint=str(root / "leftImg8bit" / split / ("{key}" + IMAGE_SUFFIX)),
                    label_hint=str(gt_dir / ("{key}" + TRAINID_SUFFIX)),
                )
            entries[split] = [
                Entry(
                    name=key,
                    image=images[key],
                    label=(train_ids.get(key) or label_ids.get(key)) if has_gt[split] else None,
                    lut=None if (not has_gt[split] or key in train_ids) else LABEL_TO_TRAIN,
                )
                for key in sorted(images)
            ]
        return cls(root, classes, entries, has_gt)
