"""Image and label-map files: reading RGB images, label PNGs, mask-id PNGs; writing label PNGs.

Every reader turns an unreadable or malformed file into a one-line
:class:`A2LCError` naming the file. Label PNGs come in three conventions
(``ClassInfo.convention``):

- ``cityscapes``: 8-bit grey PNG of trainIds (0..18, 255 = void);
- ``voc``: 8-bit palette PNG whose palette index is the class (255 = void);
- ``plain``: 8-bit grey PNG of class indices (255 = void).

Palette PNGs are always read as their indices, never as colours.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import A2LCError
from ..workspace import atomic_path
from .base import VOID, ClassInfo

# the colour VOC gives its void/border pixels (palette entry 255)
VOC_VOID_COLOUR = (224, 224, 192)

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _open(path: Path, what: str) -> Image.Image:
    """Open an image file lazily (header only), turning failures into A2LCError."""
    path = Path(path)
    if not path.is_file():
        raise A2LCError(f"{path}: {what} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (*_DECODE_ERRORS, Image.DecompressionBombWarning) as e:
        raise A2LCError(f"{path}: cannot read {what}: {_short(e)}") from None


def _decode(path: Path, what: str, im: Image.Image) -> np.ndarray:
    """Decode the pixels of an opened image into a numpy array."""
    try:
        with im:
            im.load()
            return np.asarray(im)
    except _DECODE_ERRORS as e:
        raise A2LCError(f"{path}: cannot read {what} (truncated or corrupt?): {_short(e)}") from None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def image_size(path: Path, *, what: str = "image") -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels."""
    with _open(path, what) as im:
        w, h = im.size
    return int(h), int(w)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as (H,W,3) uint8 RGB (grey, palette, RGBA, CMYK and 16-bit inputs are converted)."""
    im = _open(path, "image")
    try:
        with im:
            im.load()
            if im.mode.startswith("I"):  # 16-bit grey: keep the high byte
                grey = (np.clip(np.asarray(im), 0, 65535) // 257).astype(np.uint8)
                arr = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except _DECODE_ERRORS as e:
        raise A2LCError(f"{path}: cannot read image (truncated or corrupt?): {_short(e)}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise A2LCError(f"{path}: cannot read image as RGB (got an array of shape {arr.shape})")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_label_png(path: Path, *, what: str = "label map") -> np.ndarray:
    """Read a single-channel label PNG as (H,W) integers (palette PNGs as indices).

    Returns uint8 for 8-bit grey/palette files, uint16 for 16-bit ones (callers
    validate the values with :func:`a2lc_cli.data.base.check_label_map`).
    RGB label images are an error: colours are ambiguous, indices are not.
    """
    im = _open(path, what)
    mode = im.mode
    if mode not in ("L", "P", "I;16", "I;16B", "I", "1"):
        im.close()
        raise A2LCError(
            f"{path}: {what} must be a single-channel grey or palette PNG of class indices (got mode {mode})"
        )
    arr = _decode(path, what, im)
    if mode == "1":
        arr = arr.astype(np.uint8)
    if arr.ndim != 2:
        raise A2LCError(f"{path}: {what} must be single-channel (got shape {arr.shape})")
    return arr


def read_mask_ids(path: Path) -> np.ndarray:
    """Read a mask-id PNG (8- or 16-bit grey, or palette) as (H,W) int32: 0 = no mask, k ≥ 1 = mask k."""
    arr = read_label_png(path, what="mask-id map")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise A2LCError(f"{path}: mask-id map has negative values")
    return arr.astype(np.int32, copy=False)


def voc_palette_bytes(classes: ClassInfo) -> bytes:
    """A 256-entry palette (768 bytes): the classes' colours, VOC's void colour at 255."""
    pal = np.zeros((256, 3), np.uint8)
    colours = np.asarray(classes.palette, np.uint8).reshape(-1, 3)[:256]
    pal[: len(colours)] = colours
    pal[VOID] = VOC_VOID_COLOUR
    return pal.tobytes()


def write_label_png(path: Path, label: np.ndarray, classes: ClassInfo) -> None:
    """Write a (H,W) uint8 label map as a PNG in the dataset's convention, atomically.

    cityscapes / plain: 8-bit grey PNG of the label values; voc: 8-bit palette PNG
    with the classes' palette (index = class, 255 = void). The file is written to a
    temporary name and renamed into place, so a failure leaves ``path`` untouched.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be (H,W), got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError("label values must fit in uint8")
        label = label.astype(np.uint8)
    h, w = label.shape
    if classes.convention == "voc":
        im = Image.frombytes("P", (w, h), np.ascontiguousarray(label).tobytes())
        im.putpalette(voc_palette_bytes(classes))
    else:
        im = Image.frombytes("L", (w, h), np.ascontiguousarray(label).tobytes())
    with atomic_path(Path(path)) as tmp:
        im.save(tmp, format="PNG")
