"""Metrics: confusion matrices, IoU, Data mIoU of a round's labels, label coverage.

Data mIoU compares the train-set labels of a round with the ground truth; Model
mIoU compares a model's predictions on the validation set with it. Both ignore
pixels whose ground truth is void (255). Label pixels that are unlabeled (255)
are ignored by default, as in the paper; ``unlabeled="error"`` counts them as
wrong instead. Coverage is always reported beside the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .data.base import VOID

Unlabeled = Literal["ignore", "error"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C+1) int64 confusion counts; rows = ground truth, columns = prediction.

    pred, gt: integer arrays of the same shape, values in [0, C) or 255.
    Pixels with void ground truth are dropped. A void prediction is counted in
    the extra last column ("unlabeled").
    """
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt differ in size: {pred.shape} vs {gt.shape}")
    keep = gt != VOID
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    p = np.where(p == VOID, num_classes, p)
    return np.bincount(g * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1
    )


@dataclass
class IoUResult:
    """Per-class IoU (percent, NaN for classes absent from both GT and labels) and summary."""

    per_class: np.ndarray
    miou: float
    coverage: float
    pixel_accuracy: float
    confusion: np.ndarray


def iou_from_confusion(conf: np.ndarray, *, unlabeled: Unlabeled = "ignore") -> IoUResult:
    """IoU per class from a (C, C+1) confusion matrix.

    IoU_c = TP_c / (TP_c + FP_c + FN_c). With ``unlabeled="ignore"`` the unlabeled
    column is dropped; with ``"error"`` those pixels are false negatives of their
    ground-truth class. mIoU averages over classes present in GT or labels.
    """
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0]
    square = conf[:, :c]
    tp = np.diag(square).astype(np.float64)
    fp = square.sum(0) - tp
    fn = square.sum(1) - tp
    if unlabeled == "error":
        fn = fn + conf[:, c]
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan) * 100
    total = conf.sum()
    labelled = square.sum()
    coverage = 100.0 * labelled / total if total else float("nan")
    acc_den = total if unlabeled == "error" else labelled
    acc = 100.0 * tp.sum() / acc_den if acc_den else float("nan")
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return IoUResult(per_class=iou, miou=miou, coverage=float(coverage), pixel_accuracy=float(acc), confusion=conf)


def data_miou(ds, state, *, unlabeled: Unlabeled = "ignore", progress=None) -> IoUResult:
    """Data mIoU of the train-set labels described by ``state`` (a MaskState) against GT.

    Streams the images one at a time: memory is bounded by one image.
    """
    from .state import paint_labels

    c = ds.num_classes
    conf = np.zeros((c, c + 1), np.int64)
    images = range(ds.n_images)
    if progress is not None:
        images = progress(images, "data mIoU")
    for i in images:
        conf += confusion_matrix(paint_labels(ds, i, state), ds.gt(i), c)
    return iou_from_confusion(conf, unlabeled=unlabeled)


def result_json(metric: str, r: int | None, res: IoUResult, class_names, **extra) -> dict:
    """The ``--json`` object of an IoU metric."""
    return {
        "metric": metric,
        "round": r,
        "miou": _num(res.miou),
        "per_class": {n: _num(v) for n, v in zip(class_names, res.per_class)},
        "coverage": _num(res.coverage),
        "pixel_accuracy": _num(res.pixel_accuracy),
        **extra,
    }


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)
