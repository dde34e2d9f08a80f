"""Integrity of workspace files: the one path every reader of ``dataset.h5`` and of the round artifacts
(``acquire.h5``, ``query.h5``, ``lcm.h5``) goes through.

Two levels, so that opening stays cheap (docs/reliability.md, section 10):

- **on open** (:func:`check_stamp`, then ``state.check_layout``, then :func:`check_contents`, all called
  by ``state.open_artifact``): the type of every attribute a2lc reads (a string, an integer, a JSON
  object — never an array), and the values of every small dataset: the image index (sizes, offsets,
  unique names), the class table, every column of the mask table (M rows: image, area, box, labels,
  scores), the answer log, the corrections, the acquisition's per-mask scores and (M,C) mean softmax.
  NaN is refused wherever it has no meaning (it is allowed only in ``masks/score``, "no detector
  score", and ``answers/seconds``, "time unknown"). No per-pixel data is read.
- **where read**: each image's per-pixel maps when a command reads them
  (:func:`check_pixels`: segment ids of that image's masks or -1 with each mask's pixel count equal
  to ``masks/area``, labels in 0..C-1 or 255), the (M,E) embedding when the acquisition is read
  (:func:`check_embedding`), and what needs two files (:func:`check_ids`, :func:`check_labels`:
  mask ids of a round artifact inside the dataset, its labels classes of the dataset).

Every failure is an :class:`DamagedFile` (exit status 2) whose message is one line,
``<file> is damaged: <what>``. Values that are in range but wrong (a flipped label 3 → 4) cannot be
detected here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import A2LCError

VOID = 255
MAX_SIDE = 65536  # largest image side a2lc accepts (config.PIXELS)
CONVENTIONS = ("cityscapes", "voc", "plain")


class DamagedFile(A2LCError):
    """A workspace file whose contents are not what a2lc wrote: ``<file> is damaged: <what>``."""


def damaged(path: Path | str, what: str) -> DamagedFile:
    """The one-line error for a damaged file (``<path> is damaged: <what>``)."""
    return DamagedFile(f"{path} is damaged: {what}")


# --------------------------------------------------------------------------- attributes
_WANT_WORDS = {"str": "a string", "int": "an integer", "bool": "a boolean", "float": "a number",
               "json": "a JSON object (text)"}


def read_attr(obj: h5py.File | h5py.Group, name: str, want: str, path: Path | str, *, required: bool = True) -> Any:
    """Attribute ``name`` of ``obj`` as a Python ``str``/``int``/``bool``/``float`` or decoded JSON ``dict``
    (``want``: "str", "int", "bool", "float", "json"); None when absent and not ``required``.

    Raises DamagedFile when it is missing (and required), an array, of another type, or (float) NaN.
    """
    try:
        v = obj.attrs.get(name)
    except Exception as e:  # noqa: BLE001 - h5py raises assorted errors on a damaged attribute heap
        raise damaged(path, f"attribute {name!r} cannot be read ({_short(e)})") from None
    where = f"attribute {name!r}" + (f" of {obj.name}" if getattr(obj, "name", "/") not in ("/", None) else "")
    if v is None:
        if required:
            raise damaged(path, f"{where} is missing")
        return None
    if isinstance(v, np.ndarray):
        if v.shape != ():
            raise damaged(path, f"{where} is an array of shape {v.shape}, expected {_WANT_WORDS[want]}")
        v = v[()]
    if isinstance(v, (bytes, np.bytes_)):
        try:
            v = bytes(v).decode()
        except UnicodeDecodeError:
            raise damaged(path, f"{where} is not UTF-8 text") from None
    if isinstance(v, np.generic):
        v = v.item()
    ok = {"str": isinstance(v, str), "json": isinstance(v, str),
          "int": isinstance(v, int) and not isinstance(v, bool),
          "bool": isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)),
          "float": isinstance(v, (int, float)) and not isinstance(v, bool)}[want]
    if not ok:
        raise damaged(path, f"{where} is {_describe(v)}, expected {_WANT_WORDS[want]}")
    if want == "bool":
        return bool(v)
    if want == "float":
        if math.isnan(v):
            raise damaged(path, f"{where} is NaN")
        return float(v)
    if want == "json":
        try:
            out = json.loads(v)
        except (ValueError, RecursionError):
            raise damaged(path, f"{where} is not valid JSON") from None
        if not isinstance(out, dict):
            raise damaged(path, f"{where} is JSON {type(out).__name__}, expected an object")
        return out
    return v


def _describe(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"[:60]


def check_stamp(f: h5py.File, kind: str, path: Path | str) -> None:
    """The common attributes of an artifact (docs/state.md): ``kind`` (must be ``kind``), ``schema_version``
    (must be ``schema_version``), ``uid``, ``created``, ``a2lc_version`` strings, ``inputs``/``meta`` JSON
    objects. A file without ``kind`` is not an a2lc file; one of another kind or version is refused."""
    from .store import SCHEMA_VERSION

    try:
        has_kind = "kind" in f.attrs
    except Exception as e:  # noqa: BLE001
        raise damaged(path, f"its attributes cannot be read ({_short(e)})") from None
    if not has_kind:
        raise A2LCError(f"{path}: an HDF5 file but not an a2lc {kind} file (no 'kind' attribute; written by another tool?)")
    found = read_attr(f, "kind", "str", path)
    if found != kind:
        raise A2LCError(f"{path}: not an a2lc {kind} file (kind={found!r})")
    version = read_attr(f, "schema_version", "int", path, required=False)
    if version != SCHEMA_VERSION:
        raise A2LCError(f"{path}: schema version {version!r} is not supported (this a2lc reads {SCHEMA_VERSION})")
    read_attr(f, "uid", "str", path)
    for name in ("created", "a2lc_version"):
        read_attr(f, name, "str", path, required=False)
    for name in ("inputs", "meta"):
        read_attr(f, name, "json", path, required=False)


# --------------------------------------------------------------------------- arrays
def _read(f: h5py.File, name: str, path: Path | str) -> np.ndarray:
    try:
        return f[name][()]
    except Exception as e:  # noqa: BLE001 - damaged chunks, filters, heaps
        raise damaged(path, f"{name} cannot be read ({_short(e)})") from None


def _strings(arr: np.ndarray, name: str, path: Path | str) -> list[str]:
    try:
        return [x.decode() if isinstance(x, bytes) else str(x) for x in arr]
    except UnicodeDecodeError:
        raise damaged(path, f"{name} holds text that is not UTF-8") from None


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(-1))[0])


def _nan_free(arr: np.ndarray, name: str, path: Path | str, *, infinite: bool = False) -> None:
    """No NaN (and no ±inf unless ``infinite``) in a float array."""
    if arr.dtype.kind != "f" or not arr.size:
        return
    bad = np.isnan(arr) if infinite else ~np.isfinite(arr)
    if bad.any():
        k = _first(bad)
        v = arr.reshape(-1)[k]
        raise damaged(path, f"{name} holds {'NaN' if np.isnan(v) else v} at index {k}")


def _in_range(arr: np.ndarray, lo: float, hi: float, name: str, path: Path | str, unit: str = "value") -> None:
    """lo ≤ every value ≤ hi (NaN fails)."""
    if not arr.size:
        return
    ok = (arr >= lo) & (arr <= hi)
    if not ok.all():
        k = _first(~ok)
        v = arr.reshape(-1)[k]
        if isinstance(v, np.floating) and np.isnan(v):
            raise damaged(path, f"{name} holds NaN at index {k}")
        raise damaged(path, f"{name}: {unit} {v} at index {k} is outside {lo}..{hi}")


def _unique(arr: np.ndarray, name: str, path: Path | str) -> None:
    if arr.size > 1:
        s = np.sort(arr.reshape(-1))
        dup = s[1:] == s[:-1]
        if dup.any():
            raise damaged(path, f"{name} holds {s[1:][dup][0]!r} twice")


def check_labels(labels: np.ndarray, num_classes: int, path: Path | str, what: str) -> None:
    """Labels must be class indices (0..num_classes-1) or void (255); DamagedFile naming ``path`` and ``what``."""
    if labels.size:
        wrong = (labels < 0) | ((labels >= num_classes) & (labels != VOID))
        if wrong.any():
            raise damaged(path, f"{what}: label {int(labels[wrong][0])} is not a class (0..{num_classes - 1}, "
                                "255 = void; or the file is from another dataset)")


def check_ids(ids: np.ndarray, n_masks: int, path: Path | str, what: str) -> None:
    """Global mask ids of a round artifact must be masks of the dataset (0..n_masks-1)."""
    if ids.size and (ids.min() < 0 or ids.max() >= n_masks):
        bad = ids[(ids < 0) | (ids >= n_masks)][0]
        raise damaged(path, f"{what} refers to mask {int(bad)}, outside the dataset's 0..{n_masks - 1} "
                            "(or the file is from another dataset)")


# --------------------------------------------------------------------------- per kind, on open
def check_contents(f: h5py.File, kind: str, path: Path | str) -> None:
    """Values of the attributes and small datasets of an open artifact whose layout (dtype kinds, shapes,
    equal lengths) ``state.check_layout`` has already checked. Raises DamagedFile. No per-pixel data
    and no embedding is read (see the module docstring)."""
    check = _CHECKS.get(kind)
    if check is not None:
        check(f, Path(path))


def _dataset(f: h5py.File, path: Path) -> None:
    c = read_attr(f, "num_classes", "int", path)
    if not 1 <= c <= VOID:
        raise damaged(path, f"num_classes {c} is not in 1..{VOID}")
    fill = read_attr(f, "fill_label", "int", path)
    if not 0 <= fill <= VOID:
        raise damaged(path, f"fill_label {fill} is not in 0..255")
    has_gt = read_attr(f, "has_gt", "bool", path)
    conv = read_attr(f, "convention", "str", path, required=False)
    if conv is not None and conv not in CONVENTIONS:
        raise damaged(path, f"convention {conv!r} is not one of {', '.join(CONVENTIONS)}")
    names = _strings(_read(f, "classes/names", path), "classes/names", path)
    if len(names) != c:
        raise damaged(path, f"{len(names)} class names for {c} classes")
    _unique(np.array(names, dtype=object), "classes/names", path)
    palette = _read(f, "classes/palette", path)
    if len(palette) < c:
        raise damaged(path, f"{len(palette)} class colours for {c} classes")
    _in_range(palette, 0, 255, "classes/palette", path)

    image_names = np.array(_strings(_read(f, "images/name", path), "images/name", path), dtype=object)
    n = len(image_names)
    _unique(image_names, "images/name", path)
    if n and (image_names == "").any():
        raise damaged(path, f"images/name: image {_first(image_names == '')} has an empty name")
    for col, values in (("images/name", image_names),
                        ("images/path", _strings(_read(f, "images/path", path), "images/path", path)
                         if "images/path" in f else ())):
        for i, v in enumerate(values):  # export writes files named after these: never outside its folder
            if (col == "images/name" and v.startswith("/")) or ".." in v.split("/"):  # a path may be absolute
                raise damaged(path, f"{col}: image {i} has the name {ascii(v)[:80]}, which leaves its folder")
    for name in ("images_total", "images_done"):
        v = read_attr(f, name, "int", path, required=False)
        if v is not None and v != n:
            raise damaged(path, f"{name} is {v} but the file indexes {n} images")
    h = _read(f, "images/height", path).astype(np.int64)
    w = _read(f, "images/width", path).astype(np.int64)
    _in_range(h, 1, MAX_SIDE, "images/height", path, "height")
    _in_range(w, 1, MAX_SIDE, "images/width", path, "width")
    po = _read(f, "images/pixel_offset", path).astype(np.int64)
    mo = _read(f, "images/mask_offset", path).astype(np.int64)
    if po[0] != 0 or not np.array_equal(np.diff(po), h * w):
        raise damaged(path, "images/pixel_offset does not match the image sizes")
    if mo[0] != 0 or (np.diff(mo) < 0).any():
        raise damaged(path, "images/mask_offset is not an increasing index")
    p, m = int(po[-1]), int(mo[-1])
    for name in ("segment", "label0", *(("gt",) if has_gt else ())):
        d = f.get(f"pixels/{name}")
        if d is None or d.shape[0] != p:
            raise damaged(path, f"pixels/{name} is {'missing' if d is None else f'{d.shape[0]} pixels'}, expected {p}")
    if "images/signature" in f or "images/signed" in f:
        sig, signed = f.get("images/signature"), f.get("images/signed")
        if sig is None or signed is None or sig.shape != (n, 8, 8, 3) or signed.shape != (n,):
            raise damaged(path, "images/signature and images/signed do not index the images")

    cols = ("image", "area", "bbox", "label0", "score", "prompt", *(("gt_label", "gt_purity") if has_gt else ()))
    for name in cols:
        d = f.get(f"masks/{name}")
        if d is None:
            if name in ("score", "prompt", "gt_purity"):
                continue
            raise damaged(path, f"masks/{name} is missing")
        if d.shape[0] != m:
            raise damaged(path, f"masks/{name} has {d.shape[0]} rows, expected {m} (images/mask_offset)")
    img = np.repeat(np.arange(n), np.diff(mo))
    if not np.array_equal(_read(f, "masks/image", path), img):
        raise damaged(path, "masks/image does not match images/mask_offset")
    area = _read(f, "masks/area", path).astype(np.int64)
    _in_range(area, 1, MAX_SIDE * MAX_SIDE, "masks/area", path, "area")
    if m and (np.bincount(img, weights=area, minlength=n) > h * w).any():
        raise damaged(path, "masks/area: the masks of an image cover more pixels than it has")
    box = _read(f, "masks/bbox", path).astype(np.int64)
    if m:
        x0, y0, x1, y1 = box.T
        bad = (x0 < 0) | (y0 < 0) | (x1 <= x0) | (y1 <= y0) | (x1 > w[img]) | (y1 > h[img])
        bad |= area > (x1 - x0) * (y1 - y0)
        if bad.any():
            k = _first(bad)
            raise damaged(path, f"masks/bbox: mask {k} has box {box[k].tolist()} outside its "
                                f"{int(h[img[k]])}x{int(w[img[k]])} image or smaller than its {int(area[k])} pixels")
    check_labels(_read(f, "masks/label0", path), c, path, "masks/label0")
    if "masks/score" in f:
        s = _read(f, "masks/score", path)
        if s.size and np.isinf(s).any():  # NaN = no detector score
            raise damaged(path, f"masks/score holds {s[np.isinf(s)][0]} at index {_first(np.isinf(s))}")
    if "masks/prompt" in f:
        _in_range(_read(f, "masks/prompt", path), -1, c - 1, "masks/prompt", path, "class index")
    if has_gt:
        check_labels(_read(f, "masks/gt_label", path), c, path, "masks/gt_label")
        if "masks/gt_purity" in f:
            _in_range(_read(f, "masks/gt_purity", path), 0, 1, "masks/gt_purity", path, "purity")
    for name in ("label0", "gt"):
        key = f"stats/{name}_values"
        if key in f:
            v = _read(f, key, path)
            if v.shape != (256,) or v.dtype.kind not in "iu" or (v < 0).any() or int(v.sum()) != p:
                raise damaged(path, f"{key} is not a count of the {p} pixels' 256 values")
            if v[c:VOID].any():
                raise damaged(path, f"{key}: pixels/{name} holds label {c + _first(v[c:VOID] > 0)}, not a class "
                                    f"(0..{c - 1}, 255 = void)")


def _query(f: h5py.File, path: Path) -> None:
    sel = _read(f, "selected/mask", path)
    _in_range(sel, 0, np.iinfo(np.int64).max, "selected/mask", path, "mask id")
    _unique(sel, "selected/mask", path)
    _nan_free(_read(f, "selected/score", path), "selected/score", path, infinite=True)
    a = _read(f, "answers/mask", path)
    _in_range(a, 0, np.iinfo(np.int64).max, "answers/mask", path, "mask id")
    _in_range(_read(f, "answers/unit", path), 0, 1, "answers/unit", path, "unit")
    seconds = _read(f, "answers/seconds", path)
    known = seconds[~np.isnan(seconds)]  # NaN: time unknown
    _in_range(known, 0, np.finfo(np.float64).max, "answers/seconds", path, "seconds")
    t = _read(f, "answers/time", path)
    _nan_free(t, "answers/time", path)
    _strings(_read(f, "answers/annotator", path), "answers/annotator", path)
    g = f["answers"]
    read_attr(g, "checksum", "str", path)
    count = read_attr(g, "count", "int", path, required=False)
    if count is not None and count != len(a):
        raise damaged(path, f"the answer log holds {len(a)} rows but records {count}")


def _lcm(f: h5py.File, path: Path) -> None:
    ids = _read(f, "corrected/mask", path)
    _in_range(ids, 0, np.iinfo(np.int64).max, "corrected/mask", path, "mask id")
    _unique(ids, "corrected/mask", path)
    _in_range(_read(f, "corrected/confidence", path), 0, 1, "corrected/confidence", path, "confidence")
    if "pred" in f:
        _in_range(_read(f, "pred", path), 0, VOID, "pred", path, "class")
    if "log_confidence" in f:
        _in_range(_read(f, "log_confidence", path), -np.inf, 1e-6, "log_confidence", path, "log-confidence")
        _nan_free(_read(f, "log_confidence", path), "log_confidence", path, infinite=True)
    if "tail" in f:
        _in_range(_read(f, "tail", path), 0, VOID - 1, "tail", path, "class")


def _acquire(f: h5py.File, path: Path) -> None:
    score = _read(f, "score", path)
    _nan_free(score, "score", path, infinite=True)  # -inf: queried in an earlier round
    if score.size and (score == np.inf).any():
        raise damaged(path, f"score holds inf at index {_first(score == np.inf)}")
    prob = _read(f, "mean_prob", path)
    _in_range(prob, 0, 1 + 1e-4, "mean_prob", path, "probability")
    c = prob.shape[1]
    if "dominant" in f:
        _in_range(_read(f, "dominant", path), 0, c - 1, "dominant", path, "class")
    for name in ("rep_pixel", "area", "queried_before"):
        if name in f:
            _in_range(_read(f, name, path), 0, np.iinfo(np.int64).max if name != "queried_before" else 1,
                      name, path)
    for name in ("label_counts", "class_weight", "rarity"):
        if name in f:
            v = _read(f, name, path)
            if len(v) != c:
                raise damaged(path, f"{name} has {len(v)} entries for {c} classes (mean_prob)")
            _nan_free(v, name, path)
            _in_range(v, 0, np.inf, name, path)
    read_attr(f, "kl", "float", path, required=False)


_CHECKS = {"dataset": _dataset, "query": _query, "lcm": _lcm, "acquire": _acquire}


# --------------------------------------------------------------------------- where read
def check_pixels(path: Path | str, name: str, flat: np.ndarray, i: int, *, mask_lo: int, mask_hi: int,
                 area: np.ndarray | None, num_classes: int) -> None:
    """One image's per-pixel map as read from ``dataset.h5`` (``flat``: its (H·W,) values).

    ``segment``: -1 or a mask of image ``i`` (global ids mask_lo..mask_hi-1), and each mask's pixel
    count equal to ``area`` ((mask_hi-mask_lo,) ``masks/area`` of those masks); ``label0``/``gt``:
    classes or 255. Raises DamagedFile.
    """
    if not flat.size:
        return
    if name == "segment":
        inside = flat[flat >= 0]
        if (flat < -1).any() or (inside.size and (inside.min() < mask_lo or inside.max() >= mask_hi)):
            raise damaged(path, f"pixels/segment of image {i} refers to masks outside {mask_lo}..{mask_hi - 1}")
        if area is not None and mask_hi > mask_lo:
            counts = np.bincount(inside - mask_lo, minlength=mask_hi - mask_lo)
            if not np.array_equal(counts, area):
                k = _first(counts != area)
                raise damaged(path, f"pixels/segment of image {i} gives mask {mask_lo + k} {int(counts[k])} pixels "
                                    f"but masks/area says {int(area[k])}")
    else:
        check_labels(flat, num_classes, path, f"pixels/{name} of image {i}")


def check_embedding(emb: np.ndarray, n_masks: int, path: Path | str) -> None:
    """The (M,E) mean decoder embedding of ``acquire.h5``: one finite row per mask."""
    if len(emb) != n_masks:
        raise damaged(path, f"embedding has {len(emb)} rows for {n_masks} masks")
    _nan_free(emb, "embedding", path)


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


# --------------------------------------------------------------------------- whole files (status)
def round_files() -> tuple[tuple[str, str, str], ...]:
    """(artifact file name, header kind, stage name) of every declared stage of rounds, in round order: the
    registry's (:mod:`a2lc_cli.stages`), so a newly declared stage's artifact is checked by ``a2lc status`` too."""
    from .stages import STAGES

    return tuple((s.artifact, s.kind, s.name) for s in STAGES if s.per_round)


def artifact_damage(path: Path, kind: str, *, n_masks: int | None = None, num_classes: int | None = None) -> str | None:
    """Why the round artifact ``path`` cannot be used (the one-line error), or None when it is sound.

    ``.h5``: opens it through ``store.open_artifact`` (every on-open check) and, given the dataset's size,
    checks what needs both files: one ``acquire.h5`` row per mask and column per class, mask ids of
    ``query.h5``/``lcm.h5`` inside the dataset, their labels classes of it. Torch files (``model.pt``,
    ``lcm.pt``): their header must read (:func:`a2lc_cli.store.read_header`: a truncated or foreign file
    fails). Used by ``a2lc status``.
    """
    from .store import open_artifact, read_header

    if Path(path).suffix != ".h5":
        try:
            read_header(Path(path), kind)
        except A2LCError as e:
            return str(e)
        return None
    try:
        with open_artifact(path, kind) as f:
            if n_masks is None or num_classes is None:
                return None
            if kind == "acquire":
                m, c = f["score"].shape[0], f["mean_prob"].shape[1]
                if (m, c) != (n_masks, num_classes):
                    raise damaged(path, f"it has {m} masks × {c} classes but the dataset has {n_masks} × "
                                        f"{num_classes} (from another dataset?)")
            ids = {"query": ("selected/mask", "answers/mask"), "lcm": ("corrected/mask",)}.get(kind, ())
            for name in ids:
                check_ids(_read(f, name, path), n_masks, path, name)
            labels = {"query": ("answers/label",), "lcm": ("corrected/label", "corrected/previous")}.get(kind, ())
            for name in labels:
                check_labels(_read(f, name, path), num_classes, path, name)
            if kind == "lcm" and "pred" in f and f["pred"].shape[0] != n_masks:
                raise damaged(path, f"pred has {f['pred'].shape[0]} rows for the dataset's {n_masks} masks")
    except A2LCError as e:
        return str(e)
    return None


def verify_pixels(ds: Any, progress: Any = None) -> int:
    """Read every image's per-pixel maps of an open ``state.Dataset`` through the checks of
    :func:`check_pixels` (``a2lc status --verify``): a damaged map far into the file is found now,
    not when a command reaches it. ``progress``: wraps the image range (e.g. ``ui.progress``).
    Returns the number of pixels checked; raises DamagedFile at the first damaged image."""
    images = range(ds.n_images)
    for i in (progress(images) if progress else images):
        ds.segment(i)
        ds.label0(i)
        if ds.has_gt:
            ds.gt(i)
    return int(ds.pixel_offset[-1])
