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
    """(H, W) of an image file as displayed (EXIF orientation applied), from its header only
    (a TIFF that only OpenCV reads, e.g. float RGB, is decoded)."""
    path = Path(path)
    if what == "image" and path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        try:
            _open(path, what).close()
        except A2LCError:
            h, w = _decode_with_opencv(path, mode="TIFF").shape[:2]
            return int(h), int(w)
    with _open(path, what) as im:
        w, h = _stored_size(im)
        if what == "image" and _orientation(im) in _SWAPS_AXES:
            w, h = h, w
    return int(h), int(w)


def _stored_size(im: Image.Image) -> tuple[int, int]:
    """(W, H) of the pixels as stored (before any orientation), whatever the Pillow version.

    Recent Pillow reports a TIFF's size already turned by its Orientation tag (and turns
    the pixels on load); the TIFF tags hold the stored size.
    """
    if im.format == "TIFF":
        tags = getattr(im, "tag_v2", {})
        if 256 in tags and 257 in tags:
            return int(tags[256]), int(tags[257])
    return im.size


# EXIF Orientation tag (0x0112) values whose displayed image has width and height swapped
_SWAPS_AXES = (5, 6, 7, 8)
_WIDE_BITS = (10, 12, 14, 16, 32)


def _orientation(im: Image.Image) -> int:
    """The EXIF Orientation (1..8) of an opened, not yet decoded image; 1 when absent or unreadable.

    Read from the header only (JPEG APP1, TIFF tags, WebP/PNG ``exif`` chunk before the
    pixels), so :func:`image_size` and :func:`read_rgb` agree without decoding.
    """
    try:
        if im.format == "PNG":  # PngImageFile.getexif() decodes the whole image when the chunk is absent
            if "exif" not in im.info:
                return 1
        value = im.getexif().get(0x0112, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - a damaged EXIF block is treated as no orientation, as viewers do
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels ``arr`` (H,W,...) turned into the displayed view for an EXIF ``orientation`` 1..8.

    Same transforms as ``PIL.ImageOps.exif_transpose`` and OpenCV's ``imread``:
    2 mirror, 3 rotate 180°, 4 flip, 5 transpose, 6 rotate 90° clockwise,
    7 transverse, 8 rotate 90° counter-clockwise.
    """
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return arr[::-1].swapaxes(0, 1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return arr.swapaxes(0, 1)[::-1]
    return arr


def to_uint8(arr: np.ndarray, *, where: str, mode: str) -> np.ndarray:
    """Scale non-8-bit pixel values to uint8 by the one documented rule (docs/datasets.md).

    - uint8 / bool: as they are (bool → 0/255);
    - float: values must lie in [0, 1] (NaN/inf or values outside are an error) → round(v·255);
    - wider integers: by the image's *effective bit depth* b, the smallest of 10, 12, 14,
      16, 32 bits that holds its largest value (so 12-bit data stored in a 16-bit PNG reads
      as 12-bit) → round(v·255 / (2^b − 1)); 9-bit-or-less values (max ≤ 255) stay as they are.
    Negative integers are an error. ``where``/``mode`` name the file and its mode in errors.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise A2LCError(
                f"{where}: float image (mode {mode}) with values in [{lo:g}, {hi:g}]; a2lc reads float images "
                "only with values in [0, 1] (scaled by 255): convert it to 8-bit or rescale it to [0, 1]"
            )
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(np.min(arr)), int(np.max(arr))
        if lo < 0:
            raise A2LCError(f"{where}: integer image (mode {mode}) with negative values (min {lo}); convert it to 8-bit")
        if hi <= 255:
            return arr.astype(np.uint8)
        bits = next((b for b in _WIDE_BITS if hi < (1 << b)), None)
        if bits is None:
            raise A2LCError(f"{where}: integer image (mode {mode}) with values up to {hi}; convert it to 8-bit")
        scale = 255.0 / ((1 << bits) - 1)
        return np.rint(arr.astype(np.float64) * scale).astype(np.uint8)
    raise A2LCError(f"{where}: image of mode {mode} ({arr.dtype}) cannot be read as RGB; convert it to 8-bit")


def _to_rgb(arr: np.ndarray, *, where: str, mode: str) -> np.ndarray:
    """(H,W), (H,W,1), (H,W,3) or (H,W,4) values → (H,W,3) uint8 (grey repeated, alpha dropped)."""
    arr = to_uint8(np.asarray(arr), where=where, mode=mode)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return arr[:, :, :3]
    raise A2LCError(f"{where}: cannot read image as RGB (mode {mode}, array of shape {arr.shape})")


def _decode_with_opencv(path: Path, *, mode: str) -> np.ndarray:
    """Decode at full depth with OpenCV (16-bit colour PNG/TIFF, float colour TIFF), as RGB(A) order."""
    import cv2

    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise A2LCError(f"{path}: cannot read image: {_short(e)}") from None
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        raise A2LCError(f"{path}: cannot read image (mode {mode}; not a format a2lc reads, truncated or corrupt?)")
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[:, :, [2, 1, 0, *range(3, arr.shape[2])]]  # BGR(A) → RGB(A)
    return arr


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as (H,W,3) uint8 RGB, in its displayed orientation: THE reader of source pixels.

    - EXIF orientation (JPEG, TIFF, WebP, PNG with the chunk before the pixels) is applied,
      as labelme, CVAT and OpenCV's ``imread`` do, so labels drawn on the displayed view line up;
    - grey, palette, RGBA, CMYK inputs are converted to RGB (alpha dropped);
    - non-8-bit pixels follow :func:`to_uint8` (floats in [0, 1] × 255; wider integers by
      their effective bit depth); anything else is a one-line error naming the file and mode.
    """
    path = Path(path)
    where = str(path)
    try:
        im = _open(path, "image")
    except A2LCError:
        if path.suffix.lower() in (".tif", ".tiff") and path.is_file():  # e.g. float RGB TIFF: Pillow cannot
            return np.ascontiguousarray(_to_rgb(_decode_with_opencv(path, mode="TIFF"), where=where, mode="TIFF"))
        raise
    try:
        with im:
            mode = im.mode
            orientation = _orientation(im)
            rawmode = im.tile[0].args if im.tile else None
            rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
            if mode in ("RGB", "RGBA") and isinstance(rawmode, str) and ";16" in rawmode:
                arr = _decode_with_opencv(path, mode=f"{mode} 16-bit")  # Pillow would keep only the high byte
            else:
                im.load()
                if im.format == "TIFF" and 0x0112 not in getattr(im, "tag_v2", {}):
                    orientation = 1  # this Pillow turned the TIFF on load already (and dropped the tag)
                if mode in ("RGB", "L", "F") or mode.startswith("I"):
                    arr = np.asarray(im)
                else:
                    arr = np.asarray(im.convert("RGB"))
                if mode == "I" and arr.dtype != np.int32:
                    arr = arr.astype(np.int32)
    except _DECODE_ERRORS as e:
        raise A2LCError(f"{path}: cannot read image (truncated or corrupt?): {_short(e)}") from None
    arr = _to_rgb(arr, where=where, mode=mode)
    return np.ascontiguousarray(apply_orientation(arr, orientation), dtype=np.uint8)


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
