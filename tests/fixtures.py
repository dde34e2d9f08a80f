"""Tiny datasets written in the exact on-disk formats of the real sources.

Reusable by any test: each writer takes ground-truth label maps keyed by split
and image name, writes images (derived from the labels, so a model could learn
them) and label files in the source's real format, and returns the root.

- :func:`write_cityscapes`: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` and
  ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png`` (or ``_labelIds.png``).
- :func:`write_voc`: ``JPEGImages/<id>.jpg``, palette ``SegmentationClass/<id>.png``,
  ``ImageSets/Segmentation/<split>.txt``.
- :func:`write_folder`: ``images/<split>/<name>.png`` + ``labels/<split>/<name>.png`` + ``classes.txt``.
- :func:`write_pseudolabels` / :func:`write_mask_ids`: inputs of the ``import`` labeler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from a2lc_cli.data.base import VOID, default_palette
from a2lc_cli.data.cityscapes import LABEL_TO_TRAIN

Labels = dict[str, dict[str, np.ndarray]]  # split -> image name -> (H,W) uint8 ground truth

# trainId -> one labelId that maps to it (the inverse of the official table)
TRAIN_TO_LABEL = np.zeros(256, np.uint8)
for _lid in range(255, -1, -1):
    if LABEL_TO_TRAIN[_lid] != VOID:
        TRAIN_TO_LABEL[LABEL_TO_TRAIN[_lid]] = _lid
# labelIds that the official table sends to 255 (unlabeled, static, parking, guard rail, caravan, ...)
VOID_LABEL_IDS = np.array([0, 1, 4, 6, 9, 10, 14, 15, 18, 29, 30], np.uint8)


def image_for(label: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(H,W,3) uint8 RGB image whose colour depends on the class, plus a little noise."""
    rng = np.random.default_rng(seed)
    colours = default_palette(256).astype(np.int16)
    img = colours[label] + rng.integers(-12, 13, size=(*label.shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def block_labels(h: int, w: int, classes, *, block: int = 8, void_share: float = 0.05, seed: int = 0) -> np.ndarray:
    """(H,W) uint8 label map of ``block``-sized tiles of random ``classes`` with some void tiles."""
    rng = np.random.default_rng(seed)
    gh, gw = -(-h // block), -(-w // block)
    tiles = rng.choice(np.asarray(classes, np.uint8), size=(gh, gw))
    tiles[rng.random((gh, gw)) < void_share] = VOID
    return np.kron(tiles, np.ones((block, block), np.uint8))[:h, :w].astype(np.uint8)


def void_borders(label: np.ndarray) -> np.ndarray:
    """VOC style: pixels on a boundary between two different labels become 255."""
    out = label.copy()
    edge = np.zeros(label.shape, bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    out[edge] = VOID
    return out


def save_png(path: Path, array: np.ndarray, *, palette: np.ndarray | None = None) -> Path:
    """Write a PNG: (H,W,3) RGB, (H,W) uint8 grey (or palette with ``palette``), (H,W) uint16 16-bit grey."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        im = Image.fromarray(array)
    elif array.ndim == 3:
        im = Image.fromarray(array.astype(np.uint8), "RGB")
    elif palette is not None:
        im = Image.frombytes("P", (array.shape[1], array.shape[0]), array.astype(np.uint8).tobytes())
        pal = np.zeros((256, 3), np.uint8)
        pal[: len(palette)] = palette[:256]
        pal[VOID] = (224, 224, 192)
        im.putpalette(pal.tobytes())
    else:
        im = Image.frombytes("L", (array.shape[1], array.shape[0]), array.astype(np.uint8).tobytes())
    im.save(path, format="PNG")
    return path


def write_cityscapes(root: Path, labels: Labels, *, label_kind: str = "trainIds", seed: int = 0) -> Path:
    """Write a Cityscapes tree; names are ``<city>/<stem>``; labels are trainIds (0..18, 255).

    label_kind: "trainIds" writes ``*_gtFine_labelTrainIds.png``; "labelIds" writes only
    ``*_gtFine_labelIds.png`` (trainIds mapped back to labelIds, 255 to assorted ignored ids);
    "none" writes no ground truth. A ``*_gtFine_color.png`` is written beside each label,
    as in the real dataset, and must be ignored by the loader.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, items in labels.items():
        for k, (name, lab) in enumerate(items.items()):
            city, stem = name.split("/")
            save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image_for(lab, seed=seed + k))
            gt_dir = root / "gtFine" / split / city
            if label_kind == "trainIds":
                save_png(gt_dir / f"{stem}_gtFine_labelTrainIds.png", lab)
            elif label_kind == "labelIds":
                ids = TRAIN_TO_LABEL[lab]
                void = lab == VOID
                ids[void] = rng.choice(VOID_LABEL_IDS, size=int(void.sum()))
                save_png(gt_dir / f"{stem}_gtFine_labelIds.png", ids)
            elif label_kind != "none":
                raise ValueError(label_kind)
            if label_kind != "none":
                save_png(gt_dir / f"{stem}_gtFine_color.png", image_for(lab, seed=1))
    return root


def write_voc(root: Path, labels: Labels, *, with_gt: bool = True, seed: int = 0) -> Path:
    """Write a VOC tree (``VOCdevkit/VOC2012`` contents) with JPEG images and palette-PNG labels."""
    root = Path(root)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for split, items in labels.items():
        for k, (name, lab) in enumerate(items.items()):
            Image.fromarray(image_for(lab, seed=seed + k), "RGB").save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            if with_gt:
                save_png(root / "SegmentationClass" / f"{name}.png", lab, palette=default_palette(21))
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in items))
    return root


def write_folder(
    root: Path, labels: Labels, classes, *, with_gt: bool = True, flat: bool = False, seed: int = 0
) -> Path:
    """Write ``images/<split>/<name>.png``, ``labels/<split>/<name>.png`` (grey) and ``classes.txt``.

    flat=True writes ``images/<name>.png`` / ``labels/<name>.png`` (train only).
    """
    root = Path(root)
    for split, items in labels.items():
        sub = Path() if flat else Path(split)
        for k, (name, lab) in enumerate(items.items()):
            save_png(root / "images" / sub / f"{name}.png", image_for(lab, seed=seed + k))
            if with_gt:
                save_png(root / "labels" / sub / f"{name}.png", lab)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return root


def write_pseudolabels(folder: Path, labels: dict[str, np.ndarray], *, palette: np.ndarray | None = None) -> Path:
    """``<folder>/<name>.png`` per image: grey class-index PNGs (palette PNGs with ``palette``)."""
    for name, lab in labels.items():
        save_png(Path(folder) / f"{name}.png", lab, palette=palette)
    return Path(folder)


def write_mask_ids(folder: Path, ids: dict[str, np.ndarray], *, bits: int = 16) -> Path:
    """``<folder>/<name>.png`` mask-id PNGs, 8- or 16-bit grey (0 = no mask, k = mask k)."""
    for name, m in ids.items():
        save_png(Path(folder) / f"{name}.png", m.astype(np.uint16 if bits == 16 else np.uint8))
    return Path(folder)


def cityscapes_labels(*, h: int = 32, w: int = 64, seed: int = 0) -> Labels:
    """A small random Cityscapes label set: 3 train images in 2 cities, 2 val images."""
    classes = [0, 1, 2, 8, 10, 11, 13]
    names = {
        "train": ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bochum/bochum_000000_000313"],
        "val": ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"],
    }
    return {
        s: {n: block_labels(h, w, classes, seed=seed + 10 * j + i) for i, n in enumerate(ns)}
        for j, (s, ns) in enumerate(names.items())
    }


def voc_labels(*, h: int = 40, w: int = 48, seed: int = 0) -> Labels:
    """A small random VOC label set (objects on background, 255 borders): 3 train, 2 val."""
    names = {"train": ["2007_000032", "2007_000039", "2008_000123"], "val": ["2007_000033", "2009_000001"]}
    out: Labels = {}
    for j, (s, ns) in enumerate(names.items()):
        out[s] = {}
        for i, n in enumerate(ns):
            rng = np.random.default_rng(seed + 10 * j + i)
            lab = np.zeros((h, w), np.uint8)
            for _ in range(3):
                y0, x0 = rng.integers(0, h - 12), rng.integers(0, w - 12)
                lab[y0 : y0 + rng.integers(6, 12), x0 : x0 + rng.integers(6, 12)] = rng.integers(1, 21)
            out[s][n] = void_borders(lab)
    return out
