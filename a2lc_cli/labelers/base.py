"""The labeler interface and the overlap resolution shared by mask-based labelers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..state import ImageProposal


class Labeler(ABC):
    """Turns one train image into correction units and round-0 labels."""

    name: str = ""

    def check(self) -> None:
        """Validate inputs (files, checkpoints) before any image is processed; raise A2LCError."""

    def meta(self) -> dict[str, Any]:
        """Options that identify this labeler's output (used to resume an interrupted run)."""
        return {"labeler": self.name}

    @abstractmethod
    def propose(self, index: int, image: np.ndarray, gt: np.ndarray | None) -> ImageProposal:
        """Masks and round-0 labels of train image ``index``.

        image: (H,W,3) uint8 RGB; gt: (H,W) uint8 or None. Labelers other than the
        simulation must not look at ``gt``.
        """


def paint_masks(masks: np.ndarray, labels: np.ndarray, fill_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Resolve overlapping binary masks into a non-overlapping segment map (SPEC §3).

    masks: (k,H,W) bool; labels: (k,) class of each mask.
    Masks are painted from the largest to the smallest, so smaller masks win.
    Returns (segment (H,W) int32 with the index of the winning mask or -1,
    label0 (H,W) uint8 with its label or ``fill_label`` where uncovered).
    """
    k, h, w = masks.shape
    segment = np.full((h, w), -1, np.int32)
    if k:
        areas = masks.reshape(k, -1).sum(1)
        order = np.argsort(-areas, kind="stable")  # largest first; ties keep input order
        # the last writer wins: the index of the last True along the painting order
        stacked = masks[order].reshape(k, -1)
        any_cover = stacked.any(0)
        last = k - 1 - np.argmax(stacked[::-1], axis=0)
        segment.ravel()[any_cover] = order[last[any_cover]]
    label0 = np.full((h, w), fill_label, np.uint8)
    covered = segment >= 0
    label0[covered] = np.asarray(labels, np.uint8)[segment[covered]]
    return segment, label0
