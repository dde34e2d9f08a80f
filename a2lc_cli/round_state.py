"""Round-state folding: the per-mask labels after round r (SPEC §2), from the round-0 pseudo-labels
and each round's answers (``query.h5``) and automatic corrections (``lcm.h5``).

The round state is a vector over masks: the pixel labels of any round are the round-0 label map with
the per-mask overrides of rounds 1..R painted in (:func:`paint_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import integrity
from .dataset_file import Dataset, check_labels

if TYPE_CHECKING:
    from .workspace import Workspace

# provenance codes of a mask's current label
PSEUDO, HUMAN, LCM = 0, 1, 2
PROVENANCE = ("pseudo", "human", "lcm")


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


def mask_state(ws: Workspace, ds: Dataset, r: int, *, include_lcm_of_last: bool = True) -> MaskState:
    """The per-mask labels after round ``r``: pseudo-labels, then each round's answers and LCM corrections.

    ws: the :class:`~a2lc_cli.workspace.Workspace` holding the rounds' artifacts (TypeError for
    anything else; :func:`a2lc_cli.state.mask_state` still accepts a folder for older callers).
    Rounds are applied in order 1..r; a round without a current ``query.h5`` ends the chain
    (its later rounds cannot have been computed from it). An artifact is folded in only while
    it is current by the registry's one staleness check (:func:`a2lc_cli.stages.is_current`,
    the check ``a2lc status`` shows): a ``query.h5`` whose acquisition or dataset changed ends
    the chain; an ``lcm.h5`` whose query, acquisition or LCM model (``lcm-train`` rerun)
    changed is skipped until ``a2lc lcm-correct`` makes it again.
    """
    from . import state  # read_query, read_corrections (state.py imports this module: not at the top)
    from .stages import LCM_CORRECT, QUERY, is_current
    from .workspace import Workspace

    if not isinstance(ws, Workspace):
        raise TypeError(f"mask_state takes a Workspace, not {type(ws).__name__}")
    st = initial_state(ds)
    for k in range(1, r + 1):
        qp = ws.path("query", k)
        if not qp.exists():
            break
        q = state.read_query(qp)
        if not is_current(ws, QUERY, k, q.attrs.get("inputs")):
            break
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
        lp = ws.path("lcm-correct", k)
        if not lp.exists() or (k == r and not include_lcm_of_last):
            continue
        c = state.read_corrections(lp)
        if not is_current(ws, LCM_CORRECT, k, c.attrs.get("inputs")):
            continue
        _check_ids(c.mask, ds, lp)
        check_labels(c.label, ds.num_classes, lp, "corrected/label")
        st.label[c.mask] = c.label
        st.source[c.mask] = LCM
        st.round[c.mask] = k
        st.confidence[c.mask] = c.confidence
        st.rounds_applied.append((k, "lcm"))
    return st


def _check_ids(ids: np.ndarray, ds: Dataset, path: Path) -> None:
    integrity.check_ids(ids, ds.n_masks, path, "its mask ids")
