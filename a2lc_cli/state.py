"""Workspace state in HDF5: the dataset file (written once) and per-round, per-mask state.

Every artifact is an HDF5 file whose root attributes are::

    kind            "dataset" | "acquire" | "query" | "lcm"
    schema_version  int (SCHEMA_VERSION)
    uid             random hex id of this write
    created         ISO time
    a2lc_version    version of the writer
    inputs          JSON {artifact name: uid} of what it was computed from
    meta            JSON of the options that produced it

The full schema (every dataset, dtype, shape, meaning) is in docs/state.md.

The round state is a vector over masks (SPEC §2): the pixel labels of any round
are the round-0 label map with the per-mask overrides of rounds 1..R painted in
(:func:`paint_labels`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from . import __version__, faults, integrity
from .data.base import VOID, ClassInfo
from .errors import A2LCError, os_error
from .workspace import fsync_dir, write_bytes_atomic

SCHEMA_VERSION = 1
PIXEL_CHUNK = 1 << 18
STR = h5py.string_dtype("utf-8")

# provenance codes of a mask's current label
PSEUDO, HUMAN, LCM = 0, 1, 2
PROVENANCE = ("pseudo", "human", "lcm")


# --------------------------------------------------------------------------- generic artifacts
def _stamp(f: h5py.File, kind: str, inputs: dict[str, str] | None, meta: dict[str, Any] | None) -> str:
    uid = uuid.uuid4().hex
    f.attrs["kind"] = kind
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["uid"] = uid
    f.attrs["created"] = _dt.datetime.now().isoformat(timespec="seconds")
    f.attrs["a2lc_version"] = __version__
    f.attrs["inputs"] = json.dumps(inputs or {})
    f.attrs["meta"] = json.dumps(meta or {}, default=str)
    return uid


@contextmanager
def write_artifact(
    path: Path, kind: str, *, inputs: dict[str, str] | None = None, meta: dict[str, Any] | None = None
) -> Iterator[h5py.File]:
    """Create an HDF5 artifact atomically: built in memory, then written to a temporary name,
    fsynced and renamed (:func:`a2lc_cli.workspace.write_bytes_atomic`).

    If the body raises, nothing is written and ``path`` is untouched. HDF5 never writes to
    the disk itself: a write that fails inside HDF5 (a full disk) leaves its caches in a
    state that can crash the process when the file is closed, while a plain write of the
    finished image fails cleanly (``error: no space left on device writing <path>``).
    """
    f = memory_h5()
    try:
        _stamp(f, kind, inputs, meta)
        yield f
        image = file_image(f)
    finally:
        f.close()
    write_bytes_atomic(Path(path), image)


def memory_h5() -> h5py.File:
    """A new, empty HDF5 file held in memory only (core driver without backing store)."""
    return h5py.File(f"a2lc-memory-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False)


def file_image(f: h5py.File) -> bytes:
    """The bytes of an in-memory HDF5 file (:func:`memory_h5`) as a file on disk would hold them."""
    f.flush()
    return f.id.get_file_image()


def open_artifact(path: Path, kind: str, *, hint: str = "") -> h5py.File:
    """Open an artifact read-only, checking it is a readable a2lc file of the right kind and schema."""
    path = Path(path)
    if not path.exists():
        raise A2LCError(f"{path} does not exist" + (f"; run `{hint}` first" if hint else ""))
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise A2LCError(f"{path}: {_open_failure(e)}") from None
    try:  # one validation path for every reader (a2lc_cli/integrity.py)
        integrity.check_stamp(f, kind, path)
        check_layout(f, kind, path)
        integrity.check_contents(f, kind, path)
    except A2LCError:
        f.close()
        raise
    except Exception as e:  # h5py raises assorted errors on damaged attribute heaps
        f.close()
        raise integrity.damaged(path, f"unreadable HDF5 structure ({_short(e)})") from None
    return f


# The layout of every artifact kind: dataset name -> (allowed dtype kinds, shape after the first axis,
# length group, required). Datasets of one length group must have equal first axes ("N+1": one more
# than group N). Checked by open_artifact on every open (shapes and dtypes only: no data is read);
# value ranges are checked where the values are read (Dataset.mask_column, Dataset._pixels, mask_state).
_STR, _INT, _UINT, _FLOAT, _BOOL = "OSU", "iu", "u", "f", "b"
LAYOUT: dict[str, dict[str, tuple[str, tuple[int | None, ...], str | None, bool]]] = {
    "dataset": {
        "classes/names": (_STR, (), "C", True), "classes/palette": (_INT, (3,), None, True),
        "images/name": (_STR, (), "N", True), "images/path": (_STR, (), "N", False),
        "images/height": (_INT, (), "N", True), "images/width": (_INT, (), "N", True),
        "images/pixel_offset": (_INT, (), "N+1", True), "images/mask_offset": (_INT, (), "N+1", True),
        "pixels/segment": ("i", (), "P", True), "pixels/label0": (_UINT, (), "P", True), "pixels/gt": (_UINT, (), "P", False),
        "masks/image": (_INT, (), "M", True), "masks/area": (_INT, (), "M", True), "masks/bbox": (_INT, (4,), "M", True),
        "masks/label0": (_UINT, (), "M", True), "masks/score": (_FLOAT, (), "M", False), "masks/prompt": (_INT, (), "M", False),
        "masks/gt_label": (_UINT, (), "M", False), "masks/gt_purity": (_FLOAT, (), "M", False),
    },
    "query": {
        "selected/mask": (_INT, (), "B", True), "selected/score": (_FLOAT, (), "B", True),
        "answers/mask": (_INT, (), "A", True), "answers/label": (_UINT, (), "A", True), "answers/unit": (_UINT, (), "A", True),
        "answers/annotator": (_STR, (), "A", True), "answers/seconds": (_FLOAT, (), "A", True),
        "answers/time": (_FLOAT, (), "A", True),
    },
    "lcm": {
        "corrected/mask": (_INT, (), "K", True), "corrected/label": (_UINT, (), "K", True),
        "corrected/previous": (_UINT, (), "K", True), "corrected/confidence": (_FLOAT, (), "K", True),
        "pred": (_INT, (), "M", False), "log_confidence": (_FLOAT, (), "M", False), "tail": (_INT, (), None, False),
    },
    "acquire": {
        "score": (_FLOAT, (), "M", True), "mean_prob": (_FLOAT, (None,), "M", True), "embedding": (_FLOAT, (None,), "M", False),
        "dominant": (_INT, (), "M", False), "rep_pixel": (_INT, (), "M", False), "area": (_INT, (), "M", False),
        "queried_before": (_BOOL + _INT, (), "M", False), "label_counts": (_INT, (), None, False),
        "class_weight": (_FLOAT, (), None, False), "rarity": (_FLOAT, (), None, False),
    },
}
_KIND_WORDS = {"OSU": "strings", "iu": "integers", "u": "unsigned integers", "i": "signed integers", "f": "floats",
               "biu": "booleans or integers"}


def check_layout(f: h5py.File, kind: str, path: Path | str) -> None:
    """Check every dataset of an open artifact against ``LAYOUT[kind]``: present when required, a
    dataset (not a group), of an allowed dtype kind, of the right number of axes and trailing shape,
    and of the same length as the others of its length group. Raises A2LCError naming the dataset."""
    sizes: dict[str, tuple[int, str]] = {}
    for name, (kinds, tail, group, required) in LAYOUT.get(kind, {}).items():
        if name not in f:
            if required:
                raise A2LCError(f"{path}: missing dataset {name!r} (file damaged or from another tool)")
            continue
        d = f[name]
        if not isinstance(d, h5py.Dataset):
            raise A2LCError(f"{path}: {name} is not a dataset (file damaged or from another tool)")
        dkind = "S" if h5py.check_string_dtype(d.dtype) is not None else d.dtype.kind
        if dkind not in kinds:
            raise A2LCError(f"{path}: {name} holds {d.dtype} values, expected {_KIND_WORDS.get(kinds, kinds)} "
                            "(file damaged or from another tool)")
        shape = d.shape or ()
        if len(shape) != 1 + len(tail) or any(t is not None and t != n for t, n in zip(tail, shape[1:])):
            want = "(n" + "".join(f", {'k' if t is None else t}" for t in tail) + ")"
            raise A2LCError(f"{path}: {name} has shape {shape}, expected {want} (file damaged or from another tool)")
        if group is not None:
            key, extra = (group[:-2], 1) if group.endswith("+1") else (group, 0)
            n = shape[0] - extra
            if key in sizes and sizes[key][0] != n:
                other, on = sizes[key][1], sizes[key][0]
                raise A2LCError(f"{path}: {name} has {shape[0]} rows but {other} implies {on + extra} "
                                "(file damaged)")
            sizes.setdefault(key, (n, name))


def _open_failure(e: OSError) -> str:
    """Why h5py could not open a file, in words (truncated, not HDF5, or its own message)."""
    msg = _short(e)
    m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", msg)
    if m:
        return f"truncated HDF5 file ({m.group(1)} of {m.group(2)} bytes; interrupted copy or full disk?)"
    if "file signature not found" in msg:
        return "not an HDF5 file (damaged, or another format)"
    return f"not a readable HDF5 file (truncated or corrupt?): {msg}"


def artifact_uid(path: Path, *, recorded: str | None = None) -> str | None:
    """The identity of an artifact, or None if it is missing or unreadable.

    It travels with the file's content, so a copy (``cp -r``, ``shutil.copytree``,
    ``rsync`` without ``-t``, a backup) keeps a workspace valid:

    - HDF5 artifacts: their ``uid`` attribute (a random id of the write);
    - torch checkpoints (``model.pt``, ``lcm.pt``): the ``uid`` key they store, else
      ``sha256:<hex>`` of their bytes (files written by other tools or older a2lc).

    ``recorded``: the identity a downstream artifact recorded for this file. Older
    a2lc recorded checkpoints by size and modification time (``<size>-<mtime_ns>``
    in hex); such a value is returned unchanged while the file still has that size
    and time, so workspaces written before this change stay valid in place.
    """
    path = Path(path)
    if path.suffix != ".h5":
        try:
            st = path.stat()
        except OSError:
            return None
        if recorded is not None and recorded == f"{st.st_size:x}-{st.st_mtime_ns:x}":
            return recorded
        key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in _CHECKPOINT_UIDS:
            _CHECKPOINT_UIDS[key] = _checkpoint_uid(path)
        return _CHECKPOINT_UIDS[key]
    try:
        with h5py.File(path, "r") as f:
            uid = f.attrs.get("uid")
            return uid.decode() if isinstance(uid, bytes) else (str(uid) if uid is not None else None)
    except (OSError, KeyError):
        return None


_CHECKPOINT_UIDS: dict[tuple, str | None] = {}  # (realpath, inode, size, mtime) → identity, per process


def _checkpoint_uid(path: Path) -> str | None:
    """The ``uid`` stored in a torch checkpoint (memory-mapped: no tensor is read), else a hash of its bytes."""
    import hashlib

    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        uid = obj.get("uid") if isinstance(obj, dict) else None
        if isinstance(uid, str) and uid:
            return uid
    except Exception:  # noqa: BLE001 - not a zip checkpoint, damaged, or foreign: identify by content
        pass
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return "sha256:" + h.hexdigest()


def artifact_attrs(f: h5py.File) -> dict[str, Any]:
    """The stamp of an open artifact with ``inputs`` and ``meta`` decoded."""
    out: dict[str, Any] = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if k in ("inputs", "meta"):
            try:
                v = json.loads(v)
            except (TypeError, ValueError):
                v = {}
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def read_array(f: h5py.File, name: str, *, path: Path | str = "") -> np.ndarray:
    """Read a whole dataset, turning a missing or damaged one into a one-line error."""
    try:
        return f[name][()]
    except KeyError:
        raise A2LCError(f"{path or f.filename}: missing dataset {name!r} (file damaged or from another tool)") from None
    except (OSError, ValueError) as e:
        raise A2LCError(f"{path or f.filename}: cannot read {name!r}: {_short(e)}") from None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


# --------------------------------------------------------------------------- dataset file
@dataclass
class ImageProposal:
    """One image's correction units as a labeler produces them.

    segment: (H,W) int32 local mask index per pixel, -1 where no mask covers it
        (already non-overlapping: smaller masks painted over larger ones).
    label0: (H,W) uint8 round-0 pixel labels (fill label where uncovered).
    score: (k,) float32 detector score per local mask (NaN when none).
    prompt: (k,) int16 class index of the prompt that produced the mask (-1 when none).
    """

    segment: np.ndarray
    label0: np.ndarray
    score: np.ndarray | None = None
    prompt: np.ndarray | None = None


def mask_majority(segment: np.ndarray, labels: np.ndarray, n_masks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-mask majority label with void (255) not voting.

    segment: (P,) int mask index in [0, n_masks), pixels outside any mask already removed.
    labels: (P,) uint8 labels of those pixels.
    Returns (majority (n,) uint8, votes of the majority (n,) int64, void pixel count (n,) int64).
    A mask whose void pixels outnumber its non-void pixels gets 255 (mostly void).
    """
    hist = np.bincount(segment.astype(np.int64) * 256 + labels, minlength=n_masks * 256).reshape(n_masks, 256)
    void = hist[:, VOID].copy()
    hist[:, VOID] = 0
    majority = hist.argmax(1).astype(np.uint8)
    votes = hist.max(1)
    nonvoid = hist.sum(1)
    majority[void > nonvoid] = VOID
    majority[nonvoid == 0] = VOID
    return majority, votes, void


def _bboxes(segment: np.ndarray, n_masks: int) -> np.ndarray:
    """(n,4) int32 x0,y0,x1,y1 (exclusive) of each local mask in a (H,W) segment map."""
    h, w = segment.shape
    flat = segment.ravel()
    keep = flat >= 0
    ids = flat[keep]
    idx = np.flatnonzero(keep)
    ys, xs = idx // w, idx % w
    box = np.empty((n_masks, 4), dtype=np.int32)
    box[:, 0] = w
    box[:, 1] = h
    box[:, 2] = 0
    box[:, 3] = 0
    np.minimum.at(box[:, 0], ids, xs)
    np.minimum.at(box[:, 1], ids, ys)
    np.maximum.at(box[:, 2], ids, xs + 1)
    np.maximum.at(box[:, 3], ids, ys + 1)
    return box


_MASK_COLUMNS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "image": (np.int32, ()),
    "area": (np.int64, ()),
    "bbox": (np.int32, (4,)),
    "label0": (np.uint8, ()),
    "score": (np.float32, ()),
    "prompt": (np.int16, ()),
}
_GT_COLUMNS: dict[str, tuple[Any, tuple[int, ...]]] = {"gt_label": (np.uint8, ()), "gt_purity": (np.float32, ())}
IN_MEMORY_LIMIT = 256 << 20  # dataset.h5 up to this size (its parts' total) is built in memory, then written
_PART_RE = re.compile(r"^part-(\d+)-(\d+)\.h5$")
_COPY_SLICE = 1 << 24  # elements copied at a time from a part into the finished file
_SIG = (8, 8, 3)  # per-image content signature (a2lc_cli.fingerprint.image_signature)


class DatasetWriter:
    """Streams images' correction units into ``dataset.h5``, crash-safely and resumably.

    Progress lives in the hidden folder ``.dataset.h5.partial/``. Images go to an
    open part file; :meth:`checkpoint` closes it, fsyncs it and renames it to
    ``part-<first>-<end>.h5`` (images [first, end)), so every part that carries its
    final name is complete. An HDF5 file killed while open for writing can be
    damaged in ways that crash the process that reopens it, so an unfinished part
    is never reopened: it is deleted and its images are labelled again.
    :meth:`finish` copies the parts, in order, into ``dataset.h5`` (temporary
    name, fsync, rename) and removes the folder. Parts of an interrupted run with
    the same ``meta`` are resumed: ``images_done`` tells the caller where to continue.
    """

    def __init__(
        self,
        path: Path,
        *,
        classes: ClassInfo,
        names: list[str],
        paths: list[str],
        sizes: list[tuple[int, int]],
        has_gt: bool,
        meta: dict[str, Any],
        resume: bool = True,
    ):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.classes = classes
        self.has_gt = has_gt
        self.names, self.paths = list(names), list(paths)
        self.n = len(names)
        self.sizes = sizes
        self.meta_json = json.dumps(meta, sort_keys=True, default=str)
        hw = np.array(sizes, dtype=np.int64).reshape(-1, 2)
        # parts of an interrupted run are resumed only for the same images in the same order
        self.images_digest = hashlib.sha256(json.dumps([self.names, hw.tolist()]).encode()).hexdigest()
        self.pixel_offset = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(hw[:, 0] * hw[:, 1], out=self.pixel_offset[1:])
        self.columns = {**_MASK_COLUMNS, **(_GT_COLUMNS if has_gt else {})}
        self.parts: list[tuple[Path, int, int, int, int]] = []  # (file, first, end, mask_first, mask_end)
        self.images_done = 0
        self.n_masks = 0
        # pixel count of each label value (0..255) over the images added: round-0 labels, ground truth
        self.values = {"label0": np.zeros(256, np.int64), "gt": np.zeros(256, np.int64)}
        self.f: h5py.File | None = None  # the open (unfinished) part
        self._open: tuple[Path, int, int] | None = None  # (temporary file, first image, first mask)
        try:
            if self.partial.is_file() or self.partial.is_symlink():
                self.partial.unlink()  # a single partial file of an older a2lc: never reopened (see above)
            self.partial.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, self.partial) from None
        if resume:
            self._resume()
        for p in self.partial.iterdir():  # unfinished parts, parts of other options, parts after a gap
            if p not in {q for q, *_ in self.parts}:
                _remove(p)

    def _resume(self) -> None:
        found = []
        for p in self.partial.iterdir():
            m = _PART_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), p))
        for first, end, p in sorted(found):
            if first != self.images_done or not first < end <= self.n:
                break
            try:
                with h5py.File(p, "r") as f:
                    a = f.attrs
                    ok = (a.get("meta") == self.meta_json and int(a.get("images_total", -1)) == self.n
                          and int(a.get("first", -1)) == first and int(a.get("end", -1)) == end
                          and int(a.get("mask_first", -1)) == self.n_masks
                          and a.get("images_digest") == self.images_digest and "signature" in f)
                    mask_end = int(a.get("mask_end", -1))
                    part_values = {k: np.asarray(a[f"values_{k}"], np.int64) for k in self.values}
            except (OSError, KeyError, ValueError, TypeError):
                ok = False
            if not ok:
                break
            self.parts.append((p, first, end, self.n_masks, mask_end))
            self.images_done, self.n_masks = end, mask_end
            for k, v in part_values.items():
                self.values[k] += v

    def _start_part(self) -> h5py.File:
        first = self.images_done
        tmp = self.partial / f".part-{first:07d}.h5.tmp-{os.getpid()}"  # kept for its name only
        f = memory_h5()  # written to disk by checkpoint() in one plain write (see write_artifact)
        f.attrs["meta"] = self.meta_json
        f.attrs["images_total"] = self.n
        f.attrs["images_digest"] = self.images_digest
        f.attrs["first"] = first
        f.attrs["mask_first"] = self.n_masks
        self._values_at_start = {k: v.copy() for k, v in self.values.items()}
        pix = f.create_group("pixels")
        names = ("segment", "label0", "gt") if self.has_gt else ("segment", "label0")
        for name in names:
            pix.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int32 if name == "segment" else np.uint8,
                               chunks=(PIXEL_CHUNK,), compression="gzip", compression_opts=1)
        f.create_dataset("mask_end", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        f.create_dataset("signature", shape=(0, *_SIG), maxshape=(None, *_SIG), dtype=np.uint8, chunks=(1024, *_SIG))
        f.create_dataset("signed", shape=(0,), maxshape=(None,), dtype=bool, chunks=(4096,))
        m = f.create_group("masks")
        for name, (dt, tail) in self.columns.items():
            m.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dt, chunks=(4096, *tail))
        self.f, self._open = f, (tmp, first, self.n_masks)
        return f

    def add_image(self, i: int, proposal: ImageProposal, gt: np.ndarray | None, *,
                  signature: np.ndarray | None = None) -> int:
        """Append image ``i`` (must be the next one). Returns the number of masks kept.

        signature: (8,8,3) uint8 content signature of the source image
        (:func:`a2lc_cli.fingerprint.image_signature`); ``None`` records none for this image.
        """
        if i != self.images_done:
            raise RuntimeError(f"images must be added in order: expected {self.images_done}, got {i}")
        sig = np.zeros(_SIG, np.uint8) if signature is None else np.asarray(signature, np.uint8).reshape(_SIG)
        h, w = self.sizes[i]
        seg = np.asarray(proposal.segment)
        lab = np.asarray(proposal.label0)
        if seg.shape != (h, w) or lab.shape != (h, w):
            raise A2LCError(f"image {i}: labeler produced {seg.shape}/{lab.shape} maps for a {h}x{w} image")
        if self.has_gt and (gt is None or gt.shape != (h, w)):
            raise A2LCError(f"image {i}: ground truth missing or of the wrong size")
        k_in = int(seg.max()) + 1 if seg.size and seg.max() >= 0 else 0
        # drop masks that lost all their pixels to overlap resolution; renumber densely
        area_in = np.bincount(seg[seg >= 0].ravel(), minlength=k_in)
        keep = np.flatnonzero(area_in > 0)
        remap = np.full(k_in + 1, -1, dtype=np.int64)
        remap[keep] = np.arange(keep.size)
        local = remap[seg.ravel().astype(np.int64)]  # -1 stays -1 via remap[-1]
        k = keep.size
        covered = local >= 0
        ids = local[covered]
        labflat = lab.ravel().astype(np.uint8)
        label0_mask, _, _ = mask_majority(ids, labflat[covered], k)
        score = np.full(k, np.nan, np.float32) if proposal.score is None else np.asarray(proposal.score, np.float32)[keep]
        prompt = np.full(k, -1, np.int16) if proposal.prompt is None else np.asarray(proposal.prompt, np.int16)[keep]
        start = self.n_masks
        pixels: dict[str, np.ndarray] = {
            "segment": np.where(covered, local + start, -1).astype(np.int32),
            "label0": labflat,
        }
        cols: dict[str, np.ndarray] = {
            "image": np.full(k, i, np.int32),
            "area": np.bincount(ids, minlength=k).astype(np.int64),
            "bbox": _bboxes(local.reshape(h, w), k),
            "label0": label0_mask,
            "score": score,
            "prompt": prompt,
        }
        if self.has_gt:
            g = np.asarray(gt, np.uint8).ravel()
            pixels["gt"] = g
            gt_label, votes, void = mask_majority(ids, g[covered], k)
            nonvoid = cols["area"] - void
            cols["gt_label"] = gt_label
            cols["gt_purity"] = np.where(nonvoid > 0, votes / np.maximum(nonvoid, 1), 0).astype(np.float32)
        f = self.f if self.f is not None else self._start_part()
        for name, arr in pixels.items():
            _append(f["pixels"][name], arr)
        for name, arr in cols.items():
            _append(f["masks"][name], arr)
        _append(f["mask_end"], np.array([start + k], np.int64))
        self.values["label0"] += value_counts(labflat)
        if self.has_gt:
            self.values["gt"] += value_counts(pixels["gt"])
        _append(f["signature"], sig[None])
        _append(f["signed"], np.array([signature is not None]))
        self.n_masks = start + k
        self.images_done = i + 1
        return k

    def checkpoint(self) -> None:
        """Make the images added so far durable: close the open part, fsync it, rename it into place."""
        if self.f is None or self._open is None:
            return
        tmp, first, mask_first = self._open
        self.f.attrs["end"] = self.images_done
        self.f.attrs["mask_end"] = self.n_masks
        for k, v in self.values.items():
            self.f.attrs[f"values_{k}"] = v - self._values_at_start[k]
        try:
            image = file_image(self.f)
        finally:
            self.f.close()
            self.f, self._open = None, None
        part = self.partial / f"part-{first:07d}-{self.images_done:07d}.h5"
        write_bytes_atomic(part, image)  # fsync, fault checkpoint rename.<part>, rename, fsync folder
        self.parts.append((part, first, self.images_done, mask_first, self.n_masks))

    def finish(self) -> None:
        """Copy the parts into ``dataset.h5`` (temporary name, fsync, rename) and remove the partial folder."""
        self.checkpoint()
        if self.images_done != self.n:
            raise RuntimeError(f"only {self.images_done} of {self.n} images were added")
        if sum(p.stat().st_size for p, *_ in self.parts) <= IN_MEMORY_LIMIT:
            f = memory_h5()
            try:
                self._write_final(f)
                image = file_image(f)
            finally:
                f.close()
            write_bytes_atomic(self.path, image)
        else:
            self._check_room()
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            try:
                with h5py.File(tmp, "w") as f:
                    self._write_final(f)
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                faults.checkpoint(f"rename.{self.path.name}")
                os.replace(tmp, self.path)
                fsync_dir(self.path.parent)
            except OSError as e:
                raise os_error(e, self.path) from None
            finally:
                if tmp.exists():
                    tmp.unlink()
        import shutil

        shutil.rmtree(self.partial, ignore_errors=True)

    def _check_room(self) -> None:
        """Refuse to start the final copy unless the disk has room for it (the parts' size + 10% + 1 MiB).

        The final file is too large to build in memory, so HDF5 writes it itself; checking first
        keeps HDF5 from meeting a full disk (see write_artifact). Another process filling the disk
        during the copy is not covered (docs/reliability.md).
        """
        import shutil

        need = sum(p.stat().st_size for p, *_ in self.parts)
        need = int(need * 1.1) + (1 << 20)
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return
        if free < need:
            raise A2LCError(f"no space left on device writing {self.path} (needs about {need / 2**20:.1f} MiB, "
                            f"{free / 2**20:.1f} MiB free; the labelled images are kept in {self.partial} for a resume)")

    def _write_final(self, f: h5py.File) -> None:
        _stamp(f, "dataset", {}, {})
        f.attrs["meta"] = self.meta_json
        f.attrs["images_total"] = self.n
        f.attrs["images_done"] = self.n
        f.attrs["num_classes"] = self.classes.num_classes
        f.attrs["fill_label"] = self.classes.fill_label
        f.attrs["convention"] = self.classes.convention
        f.attrs["has_gt"] = self.has_gt
        c = f.create_group("classes")
        c.create_dataset("names", data=np.array(self.classes.names, dtype=object), dtype=STR)
        c.create_dataset("palette", data=np.asarray(self.classes.palette, dtype=np.uint8).reshape(-1, 3))
        g = f.create_group("images")
        g.create_dataset("name", data=np.array(self.names, dtype=object), dtype=STR)
        g.create_dataset("path", data=np.array(self.paths, dtype=object), dtype=STR)
        hw = np.array(self.sizes, dtype=np.int64).reshape(-1, 2)
        g.create_dataset("height", data=hw[:, 0].astype(np.int32))
        g.create_dataset("width", data=hw[:, 1].astype(np.int32))
        g.create_dataset("pixel_offset", data=self.pixel_offset)
        sig = g.create_dataset("signature", shape=(self.n, *_SIG), dtype=np.uint8)
        signed = g.create_dataset("signed", shape=(self.n,), dtype=bool)
        mask_offset = np.zeros(self.n + 1, dtype=np.int64)
        total = int(self.pixel_offset[-1])
        chunk = (max(1, min(PIXEL_CHUNK, total)),)
        p = f.create_group("pixels")
        for name in ("segment", "label0", "gt") if self.has_gt else ("segment", "label0"):
            p.create_dataset(name, shape=(total,), dtype=np.int32 if name == "segment" else np.uint8, chunks=chunk,
                             compression="gzip", compression_opts=1)
        m = f.create_group("masks")
        for name, (dt, tail) in self.columns.items():
            m.create_dataset(name, shape=(self.n_masks, *tail), maxshape=(None, *tail), dtype=dt, chunks=(4096, *tail))
        for part, first, end, mask_first, mask_end in self.parts:
            with h5py.File(part, "r") as src:
                p0, p1 = int(self.pixel_offset[first]), int(self.pixel_offset[end])
                for name in p:
                    _copy_into(src["pixels"][name], p[name], at=p0, n=p1 - p0)
                for name in m:
                    _copy_into(src["masks"][name], m[name], at=mask_first, n=mask_end - mask_first)
                mask_offset[first + 1:end + 1] = src["mask_end"][: end - first]
                sig[first:end] = src["signature"][: end - first]
                signed[first:end] = src["signed"][: end - first]
        g.create_dataset("mask_offset", data=mask_offset)
        s = f.create_group("stats")
        for k, v in self.values.items():
            if k != "gt" or self.has_gt:
                s.create_dataset(f"{k}_values", data=v)

    def close(self) -> None:
        """Stop without finishing: the images added so far are kept for a resume."""
        if self.f is not None:
            self.checkpoint()


def value_counts(values: np.ndarray) -> np.ndarray:
    """(256,) int64 count of each value of a uint8 array (OpenCV's histogram: ≈4× ``np.bincount``).

    Counted in slices of 2^24 values, below which float32 bin counts are exact.
    """
    flat = np.ascontiguousarray(values, np.uint8).reshape(-1)
    out = np.zeros(256, np.int64)
    import cv2

    for s in range(0, flat.size, 1 << 24):
        part = flat[s:s + (1 << 24)].reshape(1, -1)
        out += cv2.calcHist([part], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return out


def _append(d: h5py.Dataset, arr: np.ndarray) -> None:
    n = d.shape[0]
    d.resize(n + len(arr), axis=0)
    d[n:] = arr


def _copy_into(src: h5py.Dataset, dst: h5py.Dataset, *, at: int, n: int) -> None:
    """Copy ``src[:n]`` into ``dst[at:at+n]`` a slice at a time (bounded memory).

    A part closed after a failed ``add_image`` may hold rows past ``n``; they are not copied.
    """
    if src.shape[0] < n:
        raise A2LCError(f"{src.file.filename}: damaged part file ({src.name} has {src.shape[0]} rows, expected {n})")
    step = max(1, _COPY_SLICE // max(1, int(np.prod(src.shape[1:], dtype=np.int64))))
    for s in range(0, n, step):
        e = min(n, s + step)
        dst[at + s:at + e] = src[s:e]


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


class Dataset:
    """Read-only view of ``dataset.h5``.

    Small tables (image index, mask table) are loaded into memory; per-pixel maps
    are read one image at a time.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.f = open_artifact(self.path, "dataset", hint="a2lc pseudolabel")
        try:
            a = self.f.attrs
            self.uid = str(a["uid"])
            self.num_classes = int(a["num_classes"])
            self.fill_label = int(a["fill_label"])
            self.has_gt = bool(a["has_gt"])
            conv = a.get("convention", "plain")
            names = tuple(s.decode() if isinstance(s, bytes) else s for s in read_array(self.f, "classes/names"))
            self.classes = ClassInfo(
                names=names,
                palette=read_array(self.f, "classes/palette"),
                fill_label=self.fill_label,
                convention=conv.decode() if isinstance(conv, bytes) else conv,
            )
            self.names = [s.decode() if isinstance(s, bytes) else s for s in read_array(self.f, "images/name")]
            self.heights = read_array(self.f, "images/height").astype(np.int64)
            self.widths = read_array(self.f, "images/width").astype(np.int64)
            self.pixel_offset = read_array(self.f, "images/pixel_offset")
            self.mask_offset = read_array(self.f, "images/mask_offset")
            self.meta = json.loads(a.get("meta", "{}"))
        except A2LCError:
            self.f.close()
            raise
        except (KeyError, ValueError, OSError) as e:
            self.f.close()
            raise integrity.damaged(self.path, _short(e)) from None
        self.n_images = len(self.names)
        self.n_masks = int(self.mask_offset[-1])
        self._masks: dict[str, np.ndarray] = {}
        self._pixel_sets: dict[str, h5py.Dataset] = {}

    # context manager
    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._pixel_sets.clear()
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - closing twice or after a failed open is harmless
            pass

    # mask table
    def mask_column(self, name: str) -> np.ndarray:
        """A column of the mask table, (M,) or (M,4) for bbox; cached."""
        if name not in self._masks:
            arr = read_array(self.f, f"masks/{name}", path=self.path)
            if len(arr) != self.n_masks:
                raise integrity.damaged(self.path, f"masks/{name} has {len(arr)} rows, expected {self.n_masks}")
            self._masks[name] = arr  # its values were checked on open (integrity.check_contents)
        return self._masks[name]

    @property
    def mask_image(self) -> np.ndarray:
        return self.mask_column("image")

    @property
    def mask_area(self) -> np.ndarray:
        return self.mask_column("area")

    @property
    def mask_label0(self) -> np.ndarray:
        return self.mask_column("label0")

    # per-image maps
    def shape(self, i: int) -> tuple[int, int]:
        return int(self.heights[i]), int(self.widths[i])

    PIXEL_CACHE_BYTES = 8 << 20  # chunk cache per per-pixel map: ≥ 2 chunks of the int32 segment map

    def _pixel_set(self, name: str) -> h5py.Dataset:
        """``pixels/<name>``, opened once with a chunk cache that holds a few chunks.

        Images are smaller than a chunk at the built-in size and straddle chunk ends at
        others; re-opening the dataset per image would drop the decompressed chunks and
        inflate them again for the next image.
        """
        d = self._pixel_sets.get(name)
        if d is None:
            key = f"pixels/{name}"
            if key not in self.f:
                raise KeyError(key)
            dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
            dapl.set_chunk_cache(521, self.PIXEL_CACHE_BYTES, 0.75)
            d = h5py.Dataset(h5py.h5d.open(self.f.id, key.encode(), dapl=dapl))
            self._pixel_sets[name] = d
        return d

    def _pixels(self, name: str, i: int) -> np.ndarray:
        p0, p1 = int(self.pixel_offset[i]), int(self.pixel_offset[i + 1])
        try:
            flat = self._pixel_set(name)[p0:p1]
        except KeyError:
            raise A2LCError(f"{self.path}: has no pixels/{name}") from None
        except (OSError, ValueError) as e:
            raise A2LCError(f"{self.path}: cannot read pixels/{name} of image {i}: {_short(e)}") from None
        lo, hi = int(self.mask_offset[i]), int(self.mask_offset[i + 1])
        integrity.check_pixels(self.path, name, flat, i, mask_lo=lo, mask_hi=hi, num_classes=self.num_classes,
                               area=self.mask_area[lo:hi] if name == "segment" else None)
        return flat.reshape(self.shape(i))

    def segment(self, i: int) -> np.ndarray:
        """(H,W) int32 global mask id of each pixel, -1 where no mask covers it."""
        return self._pixels("segment", i)

    def label0(self, i: int) -> np.ndarray:
        """(H,W) uint8 round-0 pixel labels."""
        return self._pixels("label0", i)

    def gt(self, i: int) -> np.ndarray:
        """(H,W) uint8 ground truth (255 void)."""
        if not self.has_gt:
            raise A2LCError("this dataset has no ground truth (metrics against GT and the simulated annotator need it)")
        return self._pixels("gt", i)

    def image_signatures(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(signatures (N,8,8,3) uint8, signed (N,) bool) of the source images, or None for a
        dataset.h5 written before a2lc recorded them (see :mod:`a2lc_cli.fingerprint`)."""
        if "images/signature" not in self.f:
            return None
        sig = read_array(self.f, "images/signature", path=self.path)
        signed = read_array(self.f, "images/signed", path=self.path).astype(bool)
        if sig.shape != (self.n_images, *_SIG) or signed.shape != (self.n_images,):
            raise integrity.damaged(self.path, f"images/signature has shape {sig.shape}")
        return sig, signed

    def masks_of(self, i: int) -> slice:
        """The global mask ids of image ``i`` as a slice."""
        return slice(int(self.mask_offset[i]), int(self.mask_offset[i + 1]))


def open_dataset(ws_root: Path) -> Dataset:
    """Open ``<workspace>/dataset.h5``."""
    return Dataset(Path(ws_root) / "dataset.h5")


# --------------------------------------------------------------------------- per-mask round state
@dataclass
class MaskState:
    """The per-mask label state after some round.

    label: (M,) uint8 current label of each mask (255 = void).
    source: (M,) uint8 provenance code (PSEUDO, HUMAN, LCM).
    round: (M,) int16 round of the last change (0 = pseudo-label).
    confidence: (M,) float64 LCM confidence of the last automatic change (NaN otherwise).
    queried: (M,) bool selected for a query in some round ≤ R (never queried again).
    rounds_applied: [(round, stage)] the stages whose outputs were painted in.
    """

    label: np.ndarray
    source: np.ndarray
    round: np.ndarray
    confidence: np.ndarray
    queried: np.ndarray
    rounds_applied: list[tuple[int, str]]

    @property
    def overridden(self) -> np.ndarray:
        """(M,) bool: masks whose label differs in provenance from the round-0 pseudo-label."""
        return self.source != PSEUDO


def initial_state(ds: Dataset) -> MaskState:
    """The round-0 state: every mask carries its pseudo-label."""
    m = ds.n_masks
    return MaskState(
        label=ds.mask_label0.copy(),
        source=np.zeros(m, np.uint8),
        round=np.zeros(m, np.int16),
        confidence=np.full(m, np.nan),
        queried=np.zeros(m, bool),
        rounds_applied=[],
    )


def paint_labels(ds: Dataset, i: int, state: MaskState) -> np.ndarray:
    """(H,W) uint8 pixel labels of image ``i``: round-0 labels with overridden masks painted in."""
    lab = ds.label0(i).copy()
    seg = ds.segment(i)
    sl = ds.masks_of(i)
    over = state.overridden[sl]
    if over.any():
        local = seg - sl.start
        inside = seg >= 0
        hit = np.zeros(seg.shape, bool)
        hit[inside] = over[local[inside]]
        lab[hit] = state.label[sl][local[hit]]
    return lab


# --------------------------------------------------------------------------- query and LCM artifacts
UNITS = ("mask", "pixel")


@dataclass
class Answers:
    """Rows of a round's append-only answer log (``query.h5`` group ``answers``).

    mask: (A,) int64 global mask id.  label: (A,) uint8 answer (255 = void).
    unit: (A,) uint8 0 = mask-level, 1 = pixel-level.  annotator: (A,) str who answered.
    seconds: (A,) float32 time spent (NaN unknown).  time: (A,) float64 unix time of the answer.
    """

    mask: np.ndarray
    label: np.ndarray
    unit: np.ndarray
    annotator: np.ndarray
    seconds: np.ndarray
    time: np.ndarray

    @classmethod
    def empty(cls) -> "Answers":
        return cls(
            np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.uint8),
            np.zeros(0, object), np.zeros(0, np.float32), np.zeros(0, np.float64),
        )

    def __len__(self) -> int:
        return len(self.mask)

    def effective(self) -> tuple[np.ndarray, np.ndarray]:
        """(mask ids, labels) with the latest answer per mask (earlier ones stay in the log)."""
        if len(self.mask) == 0:
            return self.mask, self.label
        rev_mask = self.mask[::-1]
        ids, first = np.unique(rev_mask, return_index=True)
        return ids, self.label[::-1][first]

    def concat(self, other: "Answers") -> "Answers":
        return Answers(*(np.concatenate([getattr(self, k), getattr(other, k)]) for k in
                         ("mask", "label", "unit", "annotator", "seconds", "time")))

    def checksum(self) -> str:
        """SHA-256 over the rows, stored beside them to detect damage."""
        import hashlib

        h = hashlib.sha256()
        for k in ("mask", "label", "unit", "seconds", "time"):
            h.update(np.ascontiguousarray(getattr(self, k)).tobytes())
        h.update("\x00".join(str(a) for a in self.annotator).encode())
        return h.hexdigest()


@dataclass
class Query:
    """A round's query (``query.h5``): the selected masks and the answers so far."""

    selected: np.ndarray  # (B,) int64 mask ids in rank order (Eq. 13)
    selected_score: np.ndarray  # (B,) float32 their acquisition scores
    answers: Answers
    attrs: dict[str, Any]


def write_query(path: Path, query: Query, *, inputs: dict[str, str], meta: dict[str, Any]) -> None:
    """Write (or rewrite, with more answers appended) a round's ``query.h5`` atomically."""
    a = query.answers
    with write_artifact(path, "query", inputs=inputs, meta=meta) as f:
        s = f.create_group("selected")
        s.create_dataset("mask", data=np.asarray(query.selected, np.int64))
        s.create_dataset("score", data=np.asarray(query.selected_score, np.float32))
        g = f.create_group("answers")
        g.create_dataset("mask", data=a.mask.astype(np.int64))
        g.create_dataset("label", data=a.label.astype(np.uint8))
        g.create_dataset("unit", data=a.unit.astype(np.uint8))
        g.create_dataset("annotator", data=np.array([str(x) for x in a.annotator], dtype=object), dtype=STR)
        g.create_dataset("seconds", data=a.seconds.astype(np.float32))
        g.create_dataset("time", data=a.time.astype(np.float64))
        g.attrs["checksum"] = a.checksum()
        g.attrs["count"] = len(a)


def read_query(path: Path) -> Query:
    """Read ``query.h5``; a checksum mismatch of the answers is an error."""
    with open_artifact(path, "query", hint="a2lc query") as f:
        ann = read_array(f, "answers/annotator", path=path)
        a = Answers(
            mask=read_array(f, "answers/mask", path=path).astype(np.int64),
            label=read_array(f, "answers/label", path=path).astype(np.uint8),
            unit=read_array(f, "answers/unit", path=path).astype(np.uint8),
            annotator=np.array([x.decode() if isinstance(x, bytes) else x for x in ann], dtype=object),
            seconds=read_array(f, "answers/seconds", path=path).astype(np.float32),
            time=read_array(f, "answers/time", path=path).astype(np.float64),
        )
        stored = f["answers"].attrs.get("checksum")
        stored = stored.decode() if isinstance(stored, bytes) else stored
        if stored != a.checksum():
            raise integrity.damaged(path, "the answers' checksum does not match")
        return Query(
            selected=read_array(f, "selected/mask", path=path).astype(np.int64),
            selected_score=read_array(f, "selected/score", path=path).astype(np.float32),
            answers=a,
            attrs=artifact_attrs(f),
        )


@dataclass
class Corrections:
    """A round's automatic corrections (``lcm.h5``).

    mask, label, previous: (K,) the corrected masks, their new and previous labels.
    confidence: (K,) float64 ψ's confidence (max softmax, computed in float64).
    """

    mask: np.ndarray
    label: np.ndarray
    previous: np.ndarray
    confidence: np.ndarray
    attrs: dict[str, Any]


@contextmanager
def write_corrections(path: Path, *, inputs: dict[str, Any], meta: dict[str, Any], pred: np.ndarray,
                      log_confidence: np.ndarray, previous: np.ndarray, ids: np.ndarray,
                      eligible: np.ndarray) -> Iterator[h5py.File]:
    """Write ``lcm.h5`` atomically: the corrected masks ``ids`` (K,) with ψ's class, the previous label and
    ψ's confidence, and ψ's class (255 where not ``eligible``) and log-confidence for every mask, (M,) each.
    ``previous`` is the (M,) current label of every mask. Yields the open file for a selection's own
    datasets (the paper's tail, the calibrated thresholds); the file is renamed into place on exit."""
    with write_artifact(path, "lcm", inputs=inputs, meta=meta) as f:
        g = f.create_group("corrected")
        g.create_dataset("mask", data=ids)
        g.create_dataset("label", data=pred[ids].astype(np.uint8))
        g.create_dataset("previous", data=previous[ids].astype(np.uint8))
        g.create_dataset("confidence", data=np.exp(log_confidence[ids]))
        f.create_dataset("pred", data=np.where(eligible, pred, 255).astype(np.uint8))
        f.create_dataset("log_confidence", data=log_confidence)
        yield f


def read_corrections(path: Path) -> Corrections:
    with open_artifact(path, "lcm", hint="a2lc lcm-correct") as f:
        return Corrections(
            mask=read_array(f, "corrected/mask", path=path).astype(np.int64),
            label=read_array(f, "corrected/label", path=path).astype(np.uint8),
            previous=read_array(f, "corrected/previous", path=path).astype(np.uint8),
            confidence=read_array(f, "corrected/confidence", path=path).astype(np.float64),
            attrs=artifact_attrs(f),
        )


def mask_state(ws_root: Path, ds: Dataset, r: int, *, include_lcm_of_last: bool = True) -> MaskState:
    """The per-mask labels after round ``r``: pseudo-labels, then each round's answers and LCM corrections.

    Rounds are applied in order 1..r; a round without ``query.h5`` ends the chain
    (its later rounds cannot have been computed from it). An ``lcm.h5`` whose
    recorded query uid is not the current ``query.h5`` is stale and skipped.
    """
    from .workspace import Workspace

    ws = Workspace(ws_root)
    st = initial_state(ds)
    for k in range(1, r + 1):
        qp = ws.artifact(k, "query.h5")
        if not qp.exists():
            break
        q = read_query(qp)
        _check_ids(q.selected, ds, qp)
        st.queried[q.selected] = True
        ids, labels = q.answers.effective()
        _check_ids(ids, ds, qp)
        check_labels(q.answers.label, ds.num_classes, qp, "answers/label")
        st.label[ids] = labels
        st.source[ids] = HUMAN
        st.round[ids] = k
        st.confidence[ids] = np.nan
        st.rounds_applied.append((k, "query"))
        lp = ws.artifact(k, "lcm.h5")
        if not lp.exists() or (k == r and not include_lcm_of_last):
            continue
        c = read_corrections(lp)
        if c.attrs.get("inputs", {}).get("query") != q.attrs.get("uid"):
            continue
        _check_ids(c.mask, ds, lp)
        check_labels(c.label, ds.num_classes, lp, "corrected/label")
        st.label[c.mask] = c.label
        st.source[c.mask] = LCM
        st.round[c.mask] = k
        st.confidence[c.mask] = c.confidence
        st.rounds_applied.append((k, "lcm"))
    return st


check_labels = integrity.check_labels  # (labels, num_classes, path, what)


def _check_ids(ids: np.ndarray, ds: Dataset, path: Path) -> None:
    integrity.check_ids(ids, ds.n_masks, path, "its mask ids")
