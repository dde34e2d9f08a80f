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
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (p - y) + pen * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < tol:
            break
    coef = np.zeros(z.shape[1])
    coef[keep] = beta[1:] / std[keep]
    return coef, float(beta[0] - (coef[keep] * mean[keep]).sum())


def propensity_weights(z_answered: np.ndarray, z_never: np.ndarray, *, l2: float = 1.0) -> np.ndarray:
    """(N_a,) importance weights of the answered situations toward the never-queried ones, mean 1.

    w_i ∝ (1 − e(z_i)) / e(z_i), e = P(answered | z) fitted by :func:`fit_logistic` on both groups
    (z_answered: (N_a, D), z_never: (N_u, D)). No never-queried situation: all weights 0 (there is
    nothing to correct, so no evidence is needed). No answered situation: an empty array.
    """
    z_answered = np.asarray(z_answered, np.float64)
    z_never = np.asarray(z_never, np.float64)
    if len(z_answered) == 0:
        return np.zeros(0)
    if len(z_never) == 0:
        return np.zeros(len(z_answered))
    z = np.r_[z_answered, z_never]
    y = np.r_[np.ones(len(z_answered)), np.zeros(len(z_never))]
    coef, intercept = fit_logistic(z, y, l2=l2)
    log_odds = -(z_answered @ coef + intercept)  # log((1 − e) / e)
    w = np.exp(log_odds - log_odds.max())
    return w / w.mean()


def effective_size(w: np.ndarray) -> float:
    """Kish's effective sample size (Σw)² / Σw² of weights w (0 for none or all-zero)."""
    w = np.asarray(w, np.float64)
    s2 = float((w * w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0
