"""Confusion matrix and IoU against a hand-computed case, and against a per-class brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2lc_cli.metrics import confusion_matrix, iou_from_confusion

V = 255


def hand_case():
    #          pixel: 0  1  2  3  4  5  6  7  8
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 2, V], np.uint8)
    pred = np.array([0, 0, 1, 1, V, 2, 2, 0, 1], np.uint8)
    return pred, gt


def test_confusion_matrix_hand_case():
    pred, gt = hand_case()
    conf = confusion_matrix(pred, gt, 3)
    # rows: ground truth 0..2; columns: prediction 0..2, then "unlabeled" (prediction 255).
    # pixel 8 has void ground truth and is dropped.
    assert conf.tolist() == [
        [2, 1, 0, 0],
        [0, 1, 0, 1],
        [1, 0, 2, 0],
    ]


def test_iou_hand_case_unlabeled_ignored():
    pred, gt = hand_case()
    res = iou_from_confusion(confusion_matrix(pred, gt, 3), unlabeled="ignore")
    # TP = (2,1,2); FP = column sums (3,2,2) - TP = (1,1,0); FN = row sums (3,1,3) - TP = (1,0,1)
    assert res.per_class == pytest.approx([100 * 2 / 4, 100 * 1 / 2, 100 * 2 / 3])
    assert res.miou == pytest.approx((50 + 50 + 200 / 3) / 3)
    assert res.coverage == pytest.approx(100 * 7 / 8)  # 7 of 8 scored pixels carry a label
    assert res.pixel_accuracy == pytest.approx(100 * 5 / 7)


def test_iou_hand_case_unlabeled_as_error():
    pred, gt = hand_case()
    res = iou_from_confusion(confusion_matrix(pred, gt, 3), unlabeled="error")
    # the unlabeled pixel (gt 1) becomes a false negative of class 1: IoU_1 = 1 / 3
    assert res.per_class == pytest.approx([50.0, 100 / 3, 200 / 3])
    assert res.miou == pytest.approx(50.0)
    assert res.pixel_accuracy == pytest.approx(100 * 5 / 8)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    pred, gt = hand_case()
    res = iou_from_confusion(confusion_matrix(pred, gt, 4))
    assert np.isnan(res.per_class[3])
    assert res.miou == pytest.approx((50 + 50 + 200 / 3) / 3)


def test_class_only_in_the_labels_counts_with_zero():
    gt = np.array([0, 0, 1, 1], np.uint8)
    pred = np.array([0, 2, 1, 1], np.uint8)
    res = iou_from_confusion(confusion_matrix(pred, gt, 3))
    assert res.per_class.tolist() == pytest.approx([50.0, 100.0, 0.0])
    assert res.miou == pytest.approx(50.0)


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3, np.uint8), np.zeros(4, np.uint8), 2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 5).flatmap(
        lambda c: st.tuples(
            st.just(c),
            st.lists(st.tuples(st.sampled_from([*range(c), V]), st.sampled_from([*range(c), V])), min_size=1, max_size=60),
        )
    )
)
def test_iou_matches_per_class_brute_force(case):
    c, pairs = case
    pred = np.array([p for p, _ in pairs], np.uint8)
    gt = np.array([g for _, g in pairs], np.uint8)
    res = iou_from_confusion(confusion_matrix(pred, gt, c), unlabeled="ignore")
    scored = (gt != V) & (pred != V)
    for k in range(c):
        tp = np.sum(scored & (gt == k) & (pred == k))
        union = np.sum(scored & ((gt == k) | (pred == k)))
        if union == 0:
            assert np.isnan(res.per_class[k])
        else:
            assert res.per_class[k] == pytest.approx(100 * tp / union)
