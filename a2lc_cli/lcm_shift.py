"""Selection-bias correction for the calibrated LCM selection: importance weights from a propensity model.

The evidence for a threshold comes from answered masks, which acquisition chose
because they looked wrong; the thresholds are applied to never-queried masks,
whose labels are mostly right. So a situation of a correction (ψ's class ≠ the
mask's label, see :mod:`a2lc_cli.lcm_calibration`) is right far more often among
answered masks than among never-queried ones, and an unweighted precision bound
is optimistic where it is used (docs/lcm-calibrated.md: 82% right under a 90%
bound on benchmark v1).

Under the assumption that whether a mask was queried depends on it only through
covariates z (ψ's class and confidence, the label, the segmentation model's
mean softmax over the mask, its area; acquisition scores are functions of these
model outputs), weighting each answered situation by the density ratio
p_never(z) / p_answered(z) makes weighted averages over answered situations
estimate averages over never-queried situations (importance weighting under
covariate shift). The ratio is the odds (1 − e(z)) / e(z) of a propensity model
e(z) = P(answered | z, situation), fitted by L2-penalised logistic regression on
the two groups of situations. The price of the weights is fewer effective
observations: Kish's n_eff = (Σw)² / Σw², which the bound uses
(:func:`a2lc_cli.lcm_calibration.lowest_threshold`).

Pure numpy, no file I/O.
"""

from __future__ import annotations

import numpy as np

_LOG_ERR_FLOOR = -30.0  # log(1 − confidence) below this is ψ's float noise


def shift_covariates(log_conf: np.ndarray, pred: np.ndarray, label: np.ndarray, prob: np.ndarray,
                     area: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, 5 + 2C + 1) float64 covariates of N situations for the propensity model.

    log_conf: (N,) ψ's natural-log confidence; pred: (N,) ψ's class; label: (N,) the mask's label when
    the situation arose (255 = unlabelled); prob: (N, C) the segmentation model's mean softmax over the
    mask; area: (N,) pixels. Columns: log(1 − ψ's confidence) (clipped at −30), the model's mean
    probability of the label (0 if unlabelled) and of ψ's class, the entropy of the mean softmax
    (nats), log(1 + area), one-hot ψ's class (C), one-hot label (C + 1, last = unlabelled).
    """
    log_conf = np.asarray(log_conf, np.float64)
    pred = np.asarray(pred, np.int64)
    label = np.asarray(label, np.int64)
    prob = np.asarray(prob, np.float64)
    n, c = len(pred), num_classes
    with np.errstate(divide="ignore"):
        log_err = np.maximum(np.log(-np.expm1(np.minimum(log_conf, 0.0))), _LOG_ERR_FLOOR)
    lab = np.where((label >= 0) & (label < c), label, c)
    rows = np.arange(n)
    p_label = np.where(lab < c, prob[rows, np.minimum(lab, c - 1)], 0.0)
    p_pred = prob[rows, pred]
    entropy = -(prob * np.log(np.clip(prob, 1e-12, None))).sum(1)
    z = np.zeros((n, 5 + 2 * c + 1))
    z[:, 0], z[:, 1], z[:, 2], z[:, 3] = log_err, p_label, p_pred, entropy
    z[:, 4] = np.log1p(np.asarray(area, np.float64))
    z[rows, 5 + pred] = 1.0
    z[rows, 5 + c + lab] = 1.0
    return z


def fit_logistic(z: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iterations: int = 100,
                 tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method: (coefficients (D,), intercept).

    z: (N, D) covariates, standardised inside (constant columns dropped); y: (N,) 0/1.
    Minimises Σ log(1 + exp(−s_i·η_i)) + l2/2 · ‖β_std‖² (intercept not penalised), η = β₀ + zβ,
    s = 2y − 1. Coefficients are returned on z's own scale. Raises ValueError without both classes.
    """
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64)
    if not (0 < y.sum() < len(y)):
        raise ValueError("a propensity model needs rows of both groups")
    mean, std = z.mean(0), z.std(0)
    keep = std > 1e-12
    x = np.c_[np.ones(len(z)), (z[:, keep] - mean[keep]) / std[keep]]
    d = x.shape[1]
    pen = np.full(d, l2)
    pen[0] = 0.0
    beta = np.zeros(d)
    beta[0] = np.log(y.mean() / (1 - y.mean()))
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (x @ beta)))  # the logistic without exp overflow for large |x·β|
        grad = x.T @ (p - y) + pen * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < tol:
            break
    coef = np.zeros(z.shape[1])
    coef[keep] = beta[1:] / std[keep]
    return coef, float(beta[0] - (coef[keep] * mean[keep]).sum())


def density_ratios(z_answered: np.ndarray, z_never: np.ndarray, *, l2: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Estimated density ratios r(z) = p_never(z) / p_answered(z) at the answered (N_a,) and the
    never-queried (N_u,) situations.

    r = (1 − e(z)) / e(z) · N_a / N_u, e = P(answered | z) fitted by :func:`fit_logistic` on both groups
    (z_answered: (N_a, D), z_never: (N_u, D)); r ≈ 1 where the two groups are alike. Either group
    empty: empty ratios for it and zeros for the other (nothing to compare).
    """
    z_answered = np.asarray(z_answered, np.float64)
    z_never = np.asarray(z_never, np.float64)
    if len(z_answered) == 0 or len(z_never) == 0:
        return np.zeros(len(z_answered)), np.zeros(len(z_never))
    z = np.r_[z_answered, z_never]
    y = np.r_[np.ones(len(z_answered)), np.zeros(len(z_never))]
    coef, intercept = fit_logistic(z, y, l2=l2)
    scale = np.log(len(z_answered) / len(z_never))
    # log r = −(β₀ + zβ) + log(N_a/N_u); clipped so that sums of squares stay finite (e^300 is far past any use)
    log_r = lambda x: np.clip(-(x @ coef + intercept) + scale, -300.0, 300.0)  # noqa: E731
    return np.exp(log_r(z_answered)), np.exp(log_r(z_never))


def overlap_weights(z_answered: np.ndarray, z_never: np.ndarray, *, l2: float = 1.0,
                    max_ratio: float | None = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """Importance weights of the answered situations toward the never-queried ones inside the overlap,
    and which never-queried situations are inside: ((N_a,) weights, (N_u,) bool).

    The overlap is r(z) ≤ ``max_ratio`` (:func:`density_ratios`; None = everywhere): a never-queried
    situation with a larger ratio has (almost) no answered situation like it, so the answers say nothing
    about it and it is not corrected. The weights r(z)·[r(z) ≤ max_ratio] then target the never-queried
    situations inside the overlap (p_never·1_overlap ∝ r·1_overlap·p_answered). 9 is the usual
    propensity-trimming rule e ∈ [0.1, 0.9] (Crump et al. 2009) for equal groups, written as a ratio.
    """
    r_a, r_u = density_ratios(z_answered, z_never, l2=l2)
    if max_ratio is None:
        return r_a, np.ones(len(r_u), bool)
    return np.where(r_a <= max_ratio, r_a, 0.0), r_u <= max_ratio


def propensity_weights(z_answered: np.ndarray, z_never: np.ndarray, *, l2: float = 1.0) -> np.ndarray:
    """(N_a,) importance weights of the answered situations toward all never-queried ones, mean 1
    (:func:`density_ratios` normalised; no trimming). No never-queried situation: all 0; none answered: empty."""
    r_a, _ = density_ratios(z_answered, z_never, l2=l2)
    return r_a / r_a.mean() if r_a.sum() > 0 else r_a


def effective_size(w: np.ndarray) -> float:
    """Kish's effective sample size (Σw)² / Σw² of weights w (0 for none or all-zero)."""
    w = np.asarray(w, np.float64)
    s2 = float((w * w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0
