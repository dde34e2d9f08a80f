"""The artifact store: one header format and one atomic writer/reader for every artifact.

Every a2lc artifact carries the same header (the "stamp"), in HDF5 root attributes for
``.h5`` files (:func:`_stamp`) and as top-level keys of the dict in torch files (``.pt``,
:func:`torch_stamp`)::

    kind            "dataset" | "acquire" | "query" | "lcm" (h5); "lcm" (lcm.pt), "model" (model.pt, which
                    also keeps its older ``format`` key)
    uid             random hex id of this write
    created         ISO time of the write
    a2lc_version    the a2lc that wrote it
    inputs          {key: uid} of the artifacts it was computed from (see :mod:`a2lc_cli.stages`)
    meta / options  what produced it (h5: ``meta``; torch files: their own keys, e.g. ``options``)
    (h5 only: schema_version)

- :func:`write_artifact` / :func:`open_artifact`: HDF5, atomic, checked against its kind's schema
  (:func:`layout_of`: the stage's declared ``layout`` or :data:`LAYOUT`); :func:`write_large_h5` for a file too
  large to build in memory; :func:`open_progress` for a2lc's own resumable progress files (shards, partials);
- :func:`torch_stamp` + :func:`save_torch` / :func:`load_torch`: torch files, the same header, atomic;
  the one place a2lc calls ``torch.load``;
- :func:`read_header`: kind, uid and recorded inputs of either kind of file;
- :func:`artifact_uid`: the identity of any artifact, as downstream artifacts record it.

The schema of each artifact (its datasets and their reader/writer) lives in :mod:`a2lc_cli.dataset_file`
(dataset) and :mod:`a2lc_cli.state` (query, lcm, acquire); docs/state.md describes them.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__, integrity
from .errors import A2LCError
from .workspace import atomic_path, write_bytes_atomic

SCHEMA_VERSION = 1
STR = h5py.string_dtype("utf-8")


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


@contextmanager
def write_large_h5(path: Path) -> Iterator[h5py.File]:
    """An HDF5 artifact too large to build in memory (``dataset.h5`` of a large dataset): written on disk
    at a temporary name, then fsynced and renamed over ``path`` (:func:`a2lc_cli.workspace.atomic_path`:
    the same temporary name, fault checkpoint and one-line OSError as every other atomic write). If the
    body raises, ``path`` is untouched. The body stamps it (the writer of its schema)."""
    with atomic_path(Path(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def open_progress(path: Path) -> h5py.File:
    """Open one of a2lc's own progress files read-only: acquire's shards and ``.partial`` checkpoint,
    pseudolabel's shards, the dataset writer's parts. These are not workspace artifacts (no layout check);
    their readers compare the options they recorded and treat any OSError (missing, truncated, foreign)
    as "not resumable"."""
    return h5py.File(path, "r")


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
    if path.is_dir():  # else HDF5's raw "Unable to synchronously open file (file read failed: time = ...)"
        raise A2LCError(f"{path} is a folder, not an HDF5 file")
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
# Largest first axis of a dataset, checked before any data is read: a tiny file can declare a
# 2**31-row dataset (unwritten chunks cost nothing on disk), which reading would turn into an OOM kill.
_MAX_ROWS = {"classes/names": 255, "classes/palette": 256}
_KIND_WORDS = {"OSU": "strings", "iu": "integers", "u": "unsigned integers", "i": "signed integers", "f": "floats",
               "biu": "booleans or integers"}


def layout_of(kind: str) -> dict[str, tuple[str, tuple[int | None, ...], str | None, bool]]:
    """The schema of an artifact kind: the one its declared stage names (``Stage.layout``, the stage
    registry :mod:`a2lc_cli.stages`), else :data:`LAYOUT`'s (the built-in kinds); {} for an unknown kind."""
    from .stages import STAGES

    declared = next((s for s in STAGES if s.kind == kind and s.layout), None)
    return declared.hook(declared.layout) if declared is not None else LAYOUT.get(kind, {})


def check_layout(f: h5py.File, kind: str, path: Path | str) -> None:
    """Check every dataset of an open artifact against its kind's schema (:func:`layout_of`): present when required, a
    dataset (not a group), of an allowed dtype kind, of the right number of axes and trailing shape,
    and of the same length as the others of its length group. Raises A2LCError naming the dataset."""
    sizes: dict[str, tuple[int, str]] = {}
    for name, (kinds, tail, group, required) in layout_of(kind).items():
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
        if shape and shape[0] > _MAX_ROWS.get(name, shape[0]):
            raise A2LCError(f"{path}: {name} has {shape[0]} rows, at most {_MAX_ROWS[name]} possible (file damaged)")
        _check_stored(d, name, shape, path)
        if group is not None:
            key, extra = (group[:-2], 1) if group.endswith("+1") else (group, 0)
            n = shape[0] - extra
            if key in sizes and sizes[key][0] != n:
                other, on = sizes[key][1], sizes[key][0]
                raise A2LCError(f"{path}: {name} has {shape[0]} rows but {other} implies {on + extra} "
                                "(file damaged)")
            sizes.setdefault(key, (n, name))


# A dataset may declare at most this many times the bytes the file stores for it (and any size up to
# _FREE_BYTES): a2lc writes data in full, raw or gzip level 1, and deflate cannot exceed ~1032:1.
_MAX_RATIO, _FREE_BYTES = 4096, 1 << 20


def _check_stored(d: h5py.Dataset, name: str, shape: tuple[int, ...], path: Path | str) -> None:
    """Refuse, before any read, a dataset whose declared size (``nbytes``) is wildly larger than the
    bytes the file stores for it: a few-KiB file can declare a chunked, never-written dataset of
    2**31 rows that reading would fill with its fill value (an OOM kill). Raises A2LCError."""
    declared = int(np.prod(shape, dtype=np.float64)) * d.dtype.itemsize if shape else d.dtype.itemsize
    if declared <= _FREE_BYTES:
        return
    stored = int(d.id.get_storage_size())
    if declared > _MAX_RATIO * stored:
        rows = f"{shape[0]} rows" + (f" of shape {shape[1:]}" if len(shape) > 1 else "")
        raise A2LCError(f"{path} is damaged: {name} declares {rows} ({declared} bytes) "
                        f"but the file holds only {stored} bytes of it")


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
        obj = load_torch(path, mmap=True)
        uid = obj.get("uid") if isinstance(obj, dict) else None
        if isinstance(uid, str) and uid:
            return uid
    except A2LCError:  # not a zip checkpoint, damaged, or foreign: identify by content
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


# --------------------------------------------------------------------------- torch files
def load_torch(path: Path, *, what: str = "torch file", mmap: bool = False, hint: str = "",
               safe_globals: tuple = ()) -> Any:
    """``torch.load`` of a torch file (weights only: a damaged or planted file cannot run code).

    The one place a2lc reads torch files. ``mmap``: map the file instead of reading its tensors
    (a header read of a ResNet-101 checkpoint costs nothing). ``safe_globals``: classes a foreign
    checkpoint may hold besides tensors (``argparse.Namespace`` in Grounding DINO's). A missing,
    truncated or foreign file is an A2LCError: ``<path>: not a readable <what> (...)[; <hint>]``.
    """
    import torch

    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - torch.load raises assorted types on damaged files
        raise A2LCError(f"{path}: not a readable {what} (truncated or corrupt?): {_short(e)[:160]}"
                        + (f"; {hint}" if hint else "")) from None


def torch_stamp(kind: str, inputs: dict[str, Any] | None) -> dict[str, Any]:
    """The header of a torch artifact, the same fields as :func:`_stamp` writes into HDF5 attributes:
    ``kind``, ``uid`` (random), ``created``, ``a2lc_version``, ``inputs``. Merge it into the saved dict."""
    return {"kind": kind, "uid": uuid.uuid4().hex, "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "a2lc_version": __version__, "inputs": inputs or {}}


def save_torch(obj: Any, path: Path) -> None:
    """torch.save to memory, then one atomic plain write (torch's own writer turns a full disk into
    ``RuntimeError: unexpected pos``; a plain write gives the one-line ``no space left`` error)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer())


def read_header(path: Path, kind: str) -> dict[str, Any]:
    """The header of an artifact: ``{"kind", "uid", "inputs", ...}`` (A2LCError if unreadable).

    ``.h5``: the stamp (:func:`artifact_attrs`), the file checked by :func:`open_artifact`.
    ``.pt``: the top-level keys of the checkpoint except its tensors (memory-mapped); a model
    file (``kind="model"``) without recorded inputs falls back to the round's ``train.json``.
    """
    path = Path(path)
    if path.suffix == ".h5":
        with open_artifact(path, kind) as f:
            return artifact_attrs(f)
    obj = load_torch(path, what="checkpoint", mmap=True)
    if not isinstance(obj, dict):
        raise A2LCError(f"{path}: not an a2lc checkpoint")
    found = obj.get("kind") or ("model" if obj.get("format") else None)
    if found != kind:
        raise A2LCError(f"{path}: not an a2lc {kind} checkpoint")
    head = {k: v for k, v in obj.items() if k not in ("state_dict", "optimizer", "scheduler", "rng", "members")}
    if kind == "model" and not head.get("inputs"):
        try:
            head["inputs"] = json.loads(path.with_name("train.json").read_text()).get("inputs")
        except (OSError, ValueError, AttributeError):
            head["inputs"] = None
    return head
