"""The round artifacts ``acquire.h5``, ``query.h5`` and ``lcm.h5``: their schemas, reader and writer side by side.

Every artifact carries the header of :mod:`a2lc_cli.store` (kind, schema_version, uid, created,
a2lc_version, inputs, meta) and is written and opened through it. The dataset file lives in
:mod:`a2lc_cli.dataset_file`, round-state folding in :mod:`a2lc_cli.round_state`, the writer's
per-mask algorithms in :mod:`a2lc_cli.mask_table`; their names stay importable from here.
The full schema (every dataset, dtype, shape, meaning) is in docs/state.md.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from . import integrity
from .errors import A2LCError
from .store import (  # noqa: F401 - the generic artifact I/O moved to store.py; names kept here
    LAYOUT, STR, SCHEMA_VERSION, _short, _stamp, artifact_attrs, artifact_uid, check_layout, file_image, memory_h5, open_artifact,
    read_array, write_artifact,
)


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
    calibration: the calibrated selection's (C,) per-class arrays (``log_threshold``, ``bound`` …;
    docs/lcm-calibrated.md), None under the paper's rule.
    """

    mask: np.ndarray
    label: np.ndarray
    previous: np.ndarray
    confidence: np.ndarray
    attrs: dict[str, Any]
    calibration: dict[str, np.ndarray] | None = None


@contextmanager
def write_corrections(path: Path, *, inputs: dict[str, Any], meta: dict[str, Any], pred: np.ndarray,
                      log_confidence: np.ndarray, previous: np.ndarray, ids: np.ndarray,
                      eligible: np.ndarray, tail: np.ndarray | None = None,
                      calibration: dict[str, np.ndarray] | None = None) -> Iterator[h5py.File]:
    """Write ``lcm.h5`` atomically: the corrected masks ``ids`` (K,) with ψ's class, the previous label and
    ψ's confidence, and ψ's class (255 where not ``eligible``) and log-confidence for every mask, (M,) each.
    ``previous`` is the (M,) current label of every mask. ``tail``: the paper's tail classes (empty under
    the calibrated selection); ``calibration``: the calibrated selection's (C,) per-class arrays (group
    ``calibration``, read back as :attr:`Corrections.calibration`). Yields the open file; it is renamed
    into place on exit."""
    with write_artifact(path, "lcm", inputs=inputs, meta=meta) as f:
        g = f.create_group("corrected")
        g.create_dataset("mask", data=ids)
        g.create_dataset("label", data=pred[ids].astype(np.uint8))
        g.create_dataset("previous", data=previous[ids].astype(np.uint8))
        g.create_dataset("confidence", data=np.exp(log_confidence[ids]))
        f.create_dataset("pred", data=np.where(eligible, pred, 255).astype(np.uint8))
        f.create_dataset("log_confidence", data=log_confidence)
        if tail is not None:
            f.create_dataset("tail", data=tail)
        if calibration is not None:
            c = f.create_group("calibration")
            for name, value in calibration.items():
                c.create_dataset(name, data=value)
        yield f


def read_corrections(path: Path) -> Corrections:
    with open_artifact(path, "lcm", hint="a2lc lcm-correct") as f:
        return Corrections(
            mask=read_array(f, "corrected/mask", path=path).astype(np.int64),
            label=read_array(f, "corrected/label", path=path).astype(np.uint8),
            previous=read_array(f, "corrected/previous", path=path).astype(np.uint8),
            confidence=read_array(f, "corrected/confidence", path=path).astype(np.float64),
            attrs=artifact_attrs(f),
            calibration=({k: np.asarray(v[()]) for k, v in f["calibration"].items()} if "calibration" in f else None),
        )



# --------------------------------------------------------------------------- acquire artifact
@dataclass
class Acquisition:
    """Round r's acquisition (``acquire.h5``): θ_{r-1}'s statistics of every mask and its score.

    score: (M,) float32 acquisition score (Eq. 7-13; -inf or NaN for masks not eligible).
    mean_prob: (M,C) float32 mean softmax per mask.  embedding: (M,F) float32 mean embedding or None.
    dominant: (M,) int θ_{r-1}'s class of each mask.  rep_pixel: (M,) int image-relative flat index of
    the representative pixel.  area: (M,) int pixels.  queried_before: (M,) bool.
    label_counts: (C,) int pixels per current label.  class_weight, rarity: (C,) float (class-balanced
    scores).  kl: float KL divergence to uniform (class-balanced scores).  attrs: the header.
    Mapping access (``acq["score"]``, ``"embedding" in acq``) works too: a missing optional dataset
    is a KeyError / not ``in``.
    """

    score: np.ndarray
    mean_prob: np.ndarray
    embedding: np.ndarray | None = None
    dominant: np.ndarray | None = None
    rep_pixel: np.ndarray | None = None
    area: np.ndarray | None = None
    queried_before: np.ndarray | None = None
    label_counts: np.ndarray | None = None
    class_weight: np.ndarray | None = None
    rarity: np.ndarray | None = None
    kl: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    _ARRAYS = ("score", "mean_prob", "embedding", "dominant", "rep_pixel", "area", "queried_before",
               "label_counts", "class_weight", "rarity")

    def __getitem__(self, name: str) -> Any:
        value = getattr(self, name, None) if name in (*self._ARRAYS, "attrs") else None
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in (*self._ARRAYS, "attrs") and getattr(self, name) is not None


def write_acquisition(path: Path, acq: Acquisition, *, inputs: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``acquire.h5`` atomically (layout: ``store.LAYOUT["acquire"]``, docs/state.md)."""
    with write_artifact(path, "acquire", inputs=inputs, meta=meta) as f:
        f.create_dataset("score", data=acq.score)
        f.create_dataset("mean_prob", data=acq.mean_prob, compression="gzip", compression_opts=1)
        if acq.embedding is not None:
            f.create_dataset("embedding", data=acq.embedding, compression="gzip", compression_opts=1)
        for name in ("dominant", "rep_pixel", "area", "queried_before", "label_counts"):
            if getattr(acq, name) is not None:
                f.create_dataset(name, data=getattr(acq, name))
        if acq.class_weight is not None:
            f.create_dataset("class_weight", data=np.asarray(acq.class_weight))
            f.create_dataset("rarity", data=np.asarray(acq.rarity))
            f.attrs["kl"] = float(acq.kl)


def read_acquisition(path: Path) -> Acquisition:
    """Read ``acquire.h5`` (checked against its layout on open; A2LCError naming the file otherwise)."""
    with open_artifact(path, "acquire", hint="a2lc acquire") as f:
        arrays = {name: read_array(f, name, path=path) for name in Acquisition._ARRAYS if name in f}
        attrs = artifact_attrs(f)
    if "embedding" in arrays:  # the one array not checked on open (M×E floats)
        integrity.check_embedding(arrays["embedding"], len(arrays["score"]), path)
    kl = attrs.get("kl")
    return Acquisition(**arrays, kl=None if kl is None else float(kl), attrs=attrs)


def check_acquisition_fits(acq: Acquisition, ds: Any, path: Path) -> None:
    """An acquisition of this dataset: one row per mask, one probability column per class (A2LCError)."""
    m, c = len(acq.score), acq.mean_prob.shape[1]
    if m != ds.n_masks or c != ds.num_classes:
        raise A2LCError(f"{path} has {m} masks × {c} classes but the dataset has {ds.n_masks} × {ds.num_classes} "
                        "(from another dataset?); rerun acquire")


def mask_features(acq: Acquisition) -> np.ndarray:
    """(M,F) LCM input feature per mask (Eq. 1): the mean embedding if present, else the mean softmax."""
    return acq.embedding if acq.embedding is not None else acq.mean_prob

# The dataset file and round-state folding live in their own modules; their names stay importable from here.
from .mask_table import _bboxes, mask_majority, value_counts  # noqa: E402,F401
from .dataset_file import (  # noqa: E402,F401
    IN_MEMORY_LIMIT, PIXEL_CHUNK, Dataset, DatasetWriter, ImageProposal, check_labels, open_dataset,
)
from .round_state import (  # noqa: E402,F401
    HUMAN, LCM, PROVENANCE, PSEUDO, MaskState, _check_ids, initial_state, paint_labels,
)
from .round_state import mask_state as _mask_state  # noqa: E402


def mask_state(ws: Any, ds: Dataset, r: int, *, include_lcm_of_last: bool = True) -> MaskState:
    """:func:`a2lc_cli.round_state.mask_state`, also accepting a workspace folder for older callers
    (lcm_calibrated.py, bench scripts); new code passes a Workspace to the round_state function."""
    if isinstance(ws, (str, Path)):
        from .workspace import Workspace

        ws = Workspace(ws)
    return _mask_state(ws, ds, r, include_lcm_of_last=include_lcm_of_last)
