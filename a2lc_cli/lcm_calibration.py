"""Calibrated LCM selection (beyond the paper): per-class confidence thresholds that a precision bound supports.

The paper relabels a never-queried mask when ψ's confidence passes a fixed τ_r
(Eq. 4) and the prediction is not a tail class (Eq. 5–6). Here the threshold is
taken from the answers themselves (docs/lcm-calibrated.md):

* Every answered mask is scored by a ψ that did not see its answer (k-fold
  cross-fitting, :mod:`a2lc_cli.lcm_crossfit`): out-of-fold prediction ĉ and
  log-confidence.
* The *situations of a correction* are the answered masks whose label before
  the answer differs from ĉ; a *hit* is ĉ = the annotator's answer.
* For each predicted class with enough such situations
  (``min_class_evidence``), the threshold is the lowest confidence t such that
  the lower end of the Wilson score interval of the hit rate among situations
  with confidence ≥ t reaches ``target_precision``. Classes with less evidence
  are pooled and share one threshold, chosen the same way on their union. A
  class with fewer than ``min_class_answers`` answers, or whose (own or pooled)
  evidence never reaches the target, gets no corrections.

Pure numpy; no file I/O. All confidences are natural-log max-probabilities in
float64 (as :func:`a2lc_cli.lcm.predict_confidence` gives them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

NONE, OWN, POOLED = 0, 1, 2  # how a class got its threshold
SOURCE_NAMES = {NONE: "none", OWN: "own", POOLED: "pooled"}


def wilson_lower_bound(hits: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95) -> np.ndarray:
    """Lower end of the two-sided Wilson score interval of level ``confidence`` for the proportion hits/n.

    With p̂ = hits/n and z = Φ⁻¹(1 − (1 − confidence)/2) (1.959964 at 0.95):
    (p̂ + z²/2n − z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)  (Wilson 1927).
    It is a one-sided lower confidence bound of level 1 − (1 − confidence)/2
    (97.5% at 0.95). hits, n: broadcastable integer arrays, 0 ≤ hits ≤ n;
    n = 0 gives 0. Returns float64 of the broadcast shape.
    """
    hits = np.asarray(hits, np.float64)
    n = np.asarray(n, np.float64)
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = hits / n
        z2n = z * z / n
        centre = p + z2n / 2.0
        half = z * np.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
        lb = (centre - half) / (1.0 + z2n)
    return np.where(n > 0, np.clip(lb, 0.0, 1.0), 0.0)


@dataclass(frozen=True)
class Threshold:
    """The chosen threshold of one class or group, and the evidence at it."""

    log_threshold: float  # select log-confidence ≥ this
    support: int  # situations with confidence ≥ threshold
    hits: int  # of them, ψ's prediction = the answer
    precision: float  # hits / support (weighted: Σ w·hit / Σ w)
    bound: float  # Wilson lower bound of precision
    effective: float  # Kish's effective number of situations (= support without weights)


def lowest_threshold(log_conf: np.ndarray, hit: np.ndarray, *, target: float, confidence: float = 0.95,
                     weight: np.ndarray | None = None) -> Threshold | None:
    """The lowest confidence threshold whose precision lower bound reaches ``target`` (None if none does).

    log_conf: (N,) float64 log-confidence of the situations; hit: (N,) bool; weight: (N,) non-negative
    importance weights (None = all 1: the plain hit rate and Wilson bound on the count).
    Candidate thresholds are the distinct observed confidences; the set at a
    threshold t is every situation with log_conf ≥ t (ties are all in or all out).
    With weights, precision is Σ w·hit / Σ w over the set and the Wilson bound
    uses Kish's effective size n_eff = (Σw)² / Σw² as n (with w ≡ 1 this is the
    unweighted rule exactly). ``support`` and ``hits`` stay counts; ``effective``
    is n_eff.
    """
    log_conf = np.asarray(log_conf, np.float64)
    hit = np.asarray(hit, bool)
    if len(log_conf) == 0:
        return None
    order = np.argsort(-log_conf, kind="stable")
    lc, h = log_conf[order], hit[order]
    cum = np.cumsum(h)
    ends = np.flatnonzero(np.r_[lc[1:] != lc[:-1], True])  # last index of each tie group
    n = ends + 1
    if weight is None:
        n_eff = n.astype(np.float64)
        prec = cum[ends] / n
    else:
        w = np.asarray(weight, np.float64)[order]
        sw, sw2, swh = np.cumsum(w)[ends], np.cumsum(w * w)[ends], np.cumsum(w * h)[ends]
        with np.errstate(invalid="ignore", divide="ignore"):
            n_eff = np.where(sw2 > 0, sw * sw / sw2, 0.0)
            prec = np.where(sw > 0, swh / sw, 0.0)
    bound = wilson_lower_bound(prec * n_eff, n_eff, confidence)
    ok = np.flatnonzero(bound >= target)
    if not len(ok):
        return None
    i = ok[-1]  # the largest set = the lowest threshold
    return Threshold(float(lc[ends[i]]), int(n[i]), int(cum[ends[i]]), float(prec[i]), float(bound[i]),
                     float(n_eff[i]))


@dataclass
class ClassThresholds:
    """Per-class thresholds of the calibrated selection; every array is (C,).

    log_threshold: float64, +inf where the class gets no corrections.
    source: int8, NONE / OWN (its own evidence) / POOLED (the group of classes with little evidence).
    evidence: situations whose out-of-fold prediction is the class.
    support, hits, precision, bound, effective: at the chosen threshold, over the class's own situations
    (OWN) or the pooled group's (POOLED); 0 / NaN for NONE. With importance weights, precision is the
    weighted hit rate and effective Kish's n_eff (docs/lcm-calibrated.md); without, effective = support.
    effective_evidence: n_eff of all the class's situations (= evidence without weights).
    """

    log_threshold: np.ndarray
    source: np.ndarray
    evidence: np.ndarray
    answers: np.ndarray
    support: np.ndarray
    hits: np.ndarray
    precision: np.ndarray
    bound: np.ndarray
    effective: np.ndarray
    effective_evidence: np.ndarray
    pooled: Threshold | None

    def threshold(self) -> np.ndarray:
        """(C,) the thresholds as probabilities (NaN where none)."""
        return np.where(np.isfinite(self.log_threshold), np.exp(np.minimum(self.log_threshold, 0.0)), np.nan)


def calibrate_thresholds(
    pred: np.ndarray,
    log_conf: np.ndarray,
    answer: np.ndarray,
    previous: np.ndarray,
    num_classes: int,
    *,
    target_precision: float = 0.9,
    confidence: float = 0.95,
    min_class_evidence: int = 30,
    min_class_answers: int = 5,
    model_pred: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> ClassThresholds:
    """Per-class thresholds from cross-fitted scores of the answered masks.

    pred, log_conf: (N,) out-of-fold prediction and log-confidence of each answered mask (non-void answers);
    answer: (N,) the annotator's answers (what ψ was trained on); previous: (N,) each mask's label just
    before its answer (255 = unlabelled). A situation of a correction is pred ≠ previous (and, with
    ``model_pred`` (N,) — the segmentation model's own prediction of the mask — pred = model_pred, as
    :func:`select_calibrated` requires of a correction); a hit is pred = answer.
    weight: (N,) importance weight of each answered mask toward the never-queried masks
    (:mod:`a2lc_cli.lcm_shift`; only the situations' weights are used), None = unweighted. With weights,
    a class has its own threshold when the effective size of its situations reaches
    ``min_class_evidence``. Raises ValueError on arrays of different lengths.
    """
    pred = np.asarray(pred, np.int64)
    answer = np.asarray(answer, np.int64)
    previous = np.asarray(previous, np.int64)
    log_conf = np.asarray(log_conf, np.float64)
    if not (len(pred) == len(answer) == len(previous) == len(log_conf)):
        raise ValueError("pred, log_conf, answer and previous must have one entry per answered mask")
    c = num_classes
    answers = np.bincount(answer[answer < c], minlength=c)[:c]
    situation = pred != previous
    if model_pred is not None:
        model_pred = np.asarray(model_pred, np.int64)
        if len(model_pred) != len(pred):
            raise ValueError("model_pred must have one entry per answered mask")
        situation &= pred == model_pred
    sp, sl, sh = pred[situation], log_conf[situation], (pred == answer)[situation]
    evidence = np.bincount(sp, minlength=c)[:c]
    if weight is None:
        sw = None
        eff = evidence.astype(np.float64)
    else:
        weight = np.asarray(weight, np.float64)
        if len(weight) != len(pred):
            raise ValueError("weight must have one entry per answered mask")
        sw = weight[situation]
        s1, s2 = np.bincount(sp, sw, minlength=c)[:c], np.bincount(sp, sw * sw, minlength=c)[:c]
        with np.errstate(invalid="ignore", divide="ignore"):
            eff = np.where(s2 > 0, s1 * s1 / s2, 0.0)
    out = ClassThresholds(
        log_threshold=np.full(c, np.inf), source=np.zeros(c, np.int8), evidence=evidence, answers=answers,
        support=np.zeros(c, np.int64), hits=np.zeros(c, np.int64), precision=np.full(c, np.nan),
        bound=np.full(c, np.nan), effective=np.zeros(c), effective_evidence=eff, pooled=None,
    )
    learnt = answers >= min_class_answers
    own = learnt & (eff >= min_class_evidence)
    for k in np.flatnonzero(own):  # one pass per class (≤ C), each vectorised over its situations
        sel = sp == k
        _assign(out, [k], lowest_threshold(sl[sel], sh[sel], target=target_precision, confidence=confidence,
                                           weight=None if sw is None else sw[sel]), OWN)
    group = np.flatnonzero(learnt & ~own)
    if len(group):
        sel = np.isin(sp, group)
        out.pooled = lowest_threshold(sl[sel], sh[sel], target=target_precision, confidence=confidence,
                                      weight=None if sw is None else sw[sel])
        _assign(out, group, out.pooled, POOLED)
    return out


def _assign(out: ClassThresholds, classes, t: Threshold | None, source: int) -> None:
    if t is None:
        return
    idx = np.asarray(classes, np.int64)
    out.log_threshold[idx] = t.log_threshold
    out.source[idx] = source
    out.support[idx], out.hits[idx] = t.support, t.hits
    out.precision[idx], out.bound[idx], out.effective[idx] = t.precision, t.bound, t.effective


def select_calibrated(pred: np.ndarray, log_conf: np.ndarray, current: np.ndarray, eligible: np.ndarray,
                      log_threshold: np.ndarray, model_pred: np.ndarray | None = None) -> np.ndarray:
    """(M,) bool: never-queried masks (``eligible``) where ψ's prediction differs from the current label,
    its log-confidence reaches the predicted class's threshold (log_threshold: (C,), +inf = none) and,
    when ``model_pred`` (M,) is given, the segmentation model predicts the same class for the mask."""
    pred = np.asarray(pred, np.int64)
    out = np.asarray(eligible, bool) & (pred != np.asarray(current, np.int64)) & (np.asarray(log_conf) >= log_threshold[pred])
    return out if model_pred is None else out & (pred == np.asarray(model_pred, np.int64))


def precision_summary(th: ClassThresholds, corrected_label: np.ndarray) -> dict[str, float | int | None]:
    """The estimated precision of a round's corrections: per-class estimates weighted by the corrections made.

    corrected_label: (K,) the new labels of the corrected masks. Returns ``corrected``,
    ``estimated_precision`` (Σ_c n_c·p̂_c / Σ n_c) and ``precision_bound`` (Σ_c n_c·LB_c / Σ n_c, a lower
    bound of the corrections' precision when every class's bound holds), and ``min_class_bound``; the
    estimates are None without corrections.
    """
    c = len(th.log_threshold)
    n = np.bincount(np.asarray(corrected_label, np.int64), minlength=c)[:c]
    total = int(n.sum())
    if total == 0:
        return {"corrected": 0, "estimated_precision": None, "precision_bound": None, "min_class_bound": None}
    used = n > 0
    return {
        "corrected": total,
        "estimated_precision": float((n[used] * th.precision[used]).sum() / total),
        "precision_bound": float((n[used] * th.bound[used]).sum() / total),
        "min_class_bound": float(th.bound[used].min()),
    }


def min_support_to_pass(target: float, confidence: float = 0.95) -> int:
    """The fewest situations, all hits, whose Wilson bound reaches ``target``: n/(n + z²) ≥ target."""
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    return int(math.ceil(target * z * z / (1.0 - target) - 1e-12))
