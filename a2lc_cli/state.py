"""The query and LCM artifacts (``query.h5``, ``lcm.h5``): their schemas, reader and writer side by side.

Every artifact carries the header of :mod:`a2lc_cli.store` (kind, schema_version, uid, created,
a2lc_version, inputs, meta) and is written and opened through it. The dataset file lives in
:mod:`a2lc_cli.dataset_file`, round-state folding in :mod:`a2lc_cli.round_state`, the writer's
per-mask algorithms in :mod:`a2lc_cli.mask_table`; their names stay importable from here.
The full schema (every dataset, dtype, shape, meaning) is in docs/state.md.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

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
            raise A2LCError(f"{path}: the answers' checksum does not match (file damaged)")
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


# The dataset file and round-state folding live in their own modules; their names stay importable from here.
from .mask_table import _bboxes, mask_majority, value_counts  # noqa: E402,F401
from .dataset_file import (  # noqa: E402,F401
    IN_MEMORY_LIMIT, PIXEL_CHUNK, Dataset, DatasetWriter, ImageProposal, check_labels, open_dataset,
)
from .round_state import (  # noqa: E402,F401
    HUMAN, LCM, PROVENANCE, PSEUDO, MaskState, _check_ids, initial_state, mask_state, paint_labels,
)
