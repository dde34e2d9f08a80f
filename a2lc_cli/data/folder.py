"""A generic folder of images, optional label PNGs and a class-names file.

Layout under the dataset root, either split::

    images/train/<name>.<jpg|png|...>     labels/train/<name>.png
    images/val/<name>.<jpg|png|...>       labels/val/<name>.png
    classes.txt

or flat (every image is a train image, there is no validation split)::

    images/<name>.<ext>                   labels/<name>.png
    classes.txt

``<name>`` may contain subfolders (``images/train/site1/0001.jpg`` is
``site1/0001``). Labels are 8-bit grey or palette PNGs of class indices
(255 = void). ``classes.txt`` (or ``--classes-file``) holds one class name per
line, in label order; blank lines and lines starting with ``#`` are skipped.
Without a ``labels/`` folder for a split, that split has no ground truth.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import A2LCError
from ..textio import check_name, read_lines
from .base import SPLITS, VOID, ClassInfo, default_palette
from .discover import find_files
from .files import Entry, FileSource, check_pairs, dataset_root, resolve_fill_label

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from a text file: one per line, in label order (0, 1, ...).

    Read by :func:`a2lc_cli.textio.read_lines` (UTF-8, BOM and any line ending accepted);
    names are stripped; blank lines and ``#`` lines are skipped; invisible characters,
    duplicates (case-insensitive) and ``void``/``ignore``/``255`` are errors.
    """
    if not path.is_file():
        raise A2LCError(f"{path}: class-names file does not exist (one class name per line; --classes-file)")
    lines = read_lines(path, what="class-names file")
    names = tuple(
        check_name(s, where=f"{path} line {k + 1}")
        for k, s in enumerate(lines) if s.strip() and not s.strip().startswith("#")
    )
    if not names:
        raise A2LCError(f"{path}: no class names (one per line)")
    if len(names) >= VOID:
        raise A2LCError(f"{path}: {len(names)} classes; at most {VOID} are possible (255 is void)")
    seen: set[str] = set()
    for n in names:
        if n.lower() in seen:
            raise A2LCError(f"{path}: class name {n!r} appears twice")
        if n.lower() in ("void", "ignore", "255"):
            raise A2LCError(f"{path}: {n!r} is reserved for label 255 and cannot be a class name")
        seen.add(n.lower())
    return names


def classes_file_path(cfg: Config, root: Path) -> Path:
    """The class-names file: ``cfg.source.classes_file`` (absolute, or relative to the cwd or the root)."""
    if not cfg.source.classes_file:
        return root / "classes.txt"
    p = Path(cfg.source.classes_file).expanduser()
    if not p.is_absolute() and not p.exists() and (root / p).exists():
        return root / p
    return p


def _index_images(folder: Path) -> dict[str, Path]:
    """``<relative path without extension>`` → image path; two files with one name are an error."""
    return find_files(folder, IMAGE_EXTENSIONS, what="image")


def _index_labels(folder: Path) -> dict[str, Path]:
    return find_files(folder, (".png",), what="label")


class FolderSource(FileSource):
    """Images and optional label PNGs with matching names, plus a class-names file."""

    kind = "folder"

    @classmethod
    def from_config(cls, cfg: Config) -> "FolderSource":
        root = dataset_root(cfg)
        names = read_class_names(classes_file_path(cfg, root))
        classes = ClassInfo(
            names=names,
            palette=default_palette(len(names)),
            fill_label=resolve_fill_label(cfg, VOID, len(names)),
            convention="plain",
        )
        img_root, lab_root = root / "images", root / "labels"
        if not img_root.is_dir():
            raise A2LCError(f"{root}: no images/ folder (expected images/{{train,val}}/<name>.<ext> or images/<name>.<ext>)")
        split_layout = any((img_root / s).is_dir() for s in SPLITS)
        entries: dict[str, list[Entry]] = {}
        has_gt: dict[str, bool] = {}
        for split in SPLITS:
            if split_layout:
                img_dir, lab_dir = img_root / split, lab_root / split
            elif split == "train":
                img_dir, lab_dir = img_root, lab_root
            else:
                entries[split], has_gt[split] = [], False
                continue
            images = _index_images(img_dir)
            if split == "train" and not images:
                raise A2LCError(f"{img_dir}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
            labels = _index_labels(lab_dir)
            has_gt[split] = bool(images) and lab_dir.is_dir()
            if has_gt[split]:
                check_pairs(
                    images, labels,
                    image_hint=str(img_dir / "{key}.<ext>"),
                    label_hint=str(lab_dir / "{key}.png"),
                )
            entries[split] = [
                Entry(name=k, image=images[k], label=labels[k] if has_gt[split] else None) for k in sorted(images)
            ]
        return cls(root, classes, entries, has_gt)
