"""The dataset file (``dataset.h5``): its writer (:class:`DatasetWriter`, written once by ``a2lc
pseudolabel``, resumable) and its reader (:class:`Dataset`), side by side. Layout: docs/state.md and
``store.LAYOUT["dataset"]``; header: :mod:`a2lc_cli.store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import integrity
from .data.base import VOID, ClassInfo
from .errors import A2LCError, os_error
from .mask_table import _bboxes, mask_majority, value_counts
from .store import STR, _short, _stamp, file_image, memory_h5, open_artifact, open_progress, read_array, write_large_h5
from .workspace import write_bytes_atomic

PIXEL_CHUNK = 1 << 18


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
                with open_progress(p) as f:
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
            with write_large_h5(self.path) as f:  # the store's atomic writer (temporary name, fsync, rename)
                self._write_final(f)
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
            with open_progress(part) as src:
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


check_labels = integrity.check_labels  # (labels, num_classes, path, what)
