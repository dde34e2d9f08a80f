"""The PASCAL VOC segmentation layout (21 classes including background).

Layout under the dataset root (``VOCdevkit/VOC2012``; pointing at ``VOCdevkit``
works too when it holds exactly one ``VOC*`` folder)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          palette PNG: palette index = class, 255 = void
    ImageSets/Segmentation/train.txt    one <id> per line (required)
    ImageSets/Segmentation/val.txt      (optional)

A split none of whose ids has a ``SegmentationClass`` PNG has no ground truth.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import A2LCError
from ..textio import check_name, read_lines
from .base import SPLITS, ClassInfo, default_palette
from .discover import find_files
from .files import Entry, FileSource, dataset_root, resolve_fill_label

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_classes(fill_label: int = 0) -> ClassInfo:
    """The 21 VOC classes (background = 0) with the VOC colour map."""
    return ClassInfo(
        names=VOC_CLASSES, palette=default_palette(len(VOC_CLASSES)), fill_label=fill_label, convention="voc"
    )


def _voc_root(root: Path) -> Path:
    if (root / "JPEGImages").is_dir():
        return root
    inner = [p for p in sorted(root.glob("VOC*")) if (p / "JPEGImages").is_dir()]
    if len(inner) == 1:
        return inner[0]
    raise A2LCError(
        f"{root}: not a VOC root ({root / 'JPEGImages'} is missing; expected JPEGImages/, "
        "SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt)"
    )


def _read_ids(path: Path) -> list[str]:
    lines = read_lines(path, what="image list")
    ids = sorted({check_name(line.split()[0], where=f"{path} line {k + 1}") for k, line in enumerate(lines) if line.strip()})
    for i in ids:
        if "/" in i or "\\" in i:
            raise A2LCError(f"{path}: {i!r} is not an image id")
    return ids


class VOCSource(FileSource):
    """PASCAL VOC segmentation: JPEG images with palette-PNG ground truth."""

    kind = "voc"

    @classmethod
    def from_config(cls, cfg: Config) -> "VOCSource":
        root = _voc_root(dataset_root(cfg))
        classes = voc_classes(resolve_fill_label(cfg, 0, len(VOC_CLASSES)))
        img_dir, seg_dir = root / "JPEGImages", root / "SegmentationClass"
        lists = root / "ImageSets" / "Segmentation"
        if not (lists / "train.txt").is_file():
            raise A2LCError(f"{lists / 'train.txt'}: VOC image list missing (one image id per line)")
        jpgs = find_files(img_dir, (".jpg",), depth=1, what="image")
        pngs = find_files(seg_dir, (".png",), depth=1, what="label")
        # the reverse direction: a ground-truth PNG whose JPEG is missing
        for stem in sorted(pngs.keys() - jpgs.keys()):
            raise A2LCError(f"{pngs[stem]}: label has no image (expected {img_dir / (stem + '.jpg')})")
        entries: dict[str, list[Entry]] = {}
        has_gt: dict[str, bool] = {}
        for split in SPLITS:
            list_file = lists / f"{split}.txt"
            ids = _read_ids(list_file) if list_file.is_file() else []
            if split == "train" and not ids:
                raise A2LCError(f"{list_file}: lists no images")
            for i in ids:
                if i not in jpgs:
                    raise A2LCError(f"{list_file} lists {i!r} but its image {img_dir / (i + '.jpg')} is missing")
            labelled = [i for i in ids if i in pngs]
            has_gt[split] = bool(labelled)
            if labelled and len(labelled) != len(ids):
                missing = next(i for i in ids if i not in pngs)
                raise A2LCError(
                    f"{img_dir / (missing + '.jpg')}: image has no label (expected {seg_dir / (missing + '.png')})"
                )
            entries[split] = [
                Entry(name=i, image=jpgs[i], label=pngs[i] if has_gt[split] else None)
                for i in ids
            ]
        return cls(root, classes, entries, has_gt)
