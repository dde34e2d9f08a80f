"""Inputs that are valid but almost certainly a mistake: the warnings of ``a2lc pseudolabel``.

Computed from what the dataset writer counted while labelling (no second pass):
the number of masks and the pixel count of each label value (0..255) in the
round-0 labels and in the ground truth.
"""

from __future__ import annotations

import numpy as np

from .data.base import VOID, ClassInfo


def dataset_warnings(
    classes: ClassInfo, *, n_images: int, n_masks: int, label0_values: np.ndarray, gt_values: np.ndarray | None,
    labeler: str,
) -> list[str]:
    """One line per likely mistake (empty when none).

    label0_values, gt_values: (256,) int64 pixel count of each label value over all train
    images (``gt_values`` None without ground truth). Cases:

    - no image got a mask: nothing can be queried or corrected, and θ₀ would train on
      the fill label alone;
    - a two-class dataset whose labels (ground truth, or imported pseudo-labels) hold
      only 0 and 255: almost surely a binary mask saved as 0/255, so the foreground
      became void (255 never counts as a class).
    """
    out: list[str] = []
    if n_images and n_masks == 0:
        out.append(
            f"none of the {n_images} train images got a mask (0 correction units): nothing can be queried "
            f"or corrected, and θ₀ would train on no labelled mask; check the {labeler} labeler's inputs "
            "(prompts and thresholds, --import-dir / --mask-dir) and rerun `a2lc pseudolabel --force`"
        )
    if classes.num_classes == 2:
        for what, values in (("ground truth", gt_values), ("pseudo-labels", label0_values if labeler == "import" else None)):
            if values is None:
                continue
            v = np.asarray(values, np.int64)
            if v[0] > 0 and v[VOID] > 0 and v[1] == 0 and int(v.sum()) == int(v[0] + v[VOID]):
                out.append(
                    f"the {what} hold only the values 0 and 255 and never class 1 ({classes.names[1]!r}): 255 is void, "
                    "not a class — a binary mask saved as 0/255? Save the foreground as 1 (e.g. label // 255) "
                    "and rerun `a2lc pseudolabel --force`"
                )
    return out
