"""Label correction module (LCM, paper Eq. 1–6): learn from this round's answers, relabel similar masks.

STEP 1 (``lcm-train``): an MLP ψ_r (in→256→128→64→C, ReLU) is trained on the
masks answered in round r (non-void answers), from their mean features f(m)
(Eq. 1, computed by θ_{r-1} during acquisition), with class-weighted
cross-entropy on logits (Eq. 2; ``lcm.loss = "softmax-ce"`` applies it to ψ's
softmax outputs instead, as the authors' code does).

STEP 2 (``lcm-correct``): every mask never queried is relabelled with ψ_r's
prediction ĉ when all of these hold (Eq. 3–6, as SPEC §3 states them):
  1. max softmax ≥ τ_r, compared in float64 log-space (τ goes up to 0.9999999);
  2. ĉ is not a tail class (the ⌊α·|C|⌋ classes with the fewest answers, as the authors'
     code; ⌈α·|C|⌉ with ``lcm.tail_size = "ceil"``);
  3. the current label is not the rarest class (the first of that ordering);
  4. ĉ differs from the current label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from . import faults, ui
from .errors import A2LCError


# --------------------------------------------------------------------------- model and loss
class LCMNet(nn.Module):
    """ψ: a fully connected network in → hidden… → C with ReLU between layers (logits out)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] = (256, 128, 64)):
        super().__init__()
        dims = (in_dim, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


LCM_LOSSES = ("ce", "softmax-ce")


def class_loss_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """λ_k = (N/N_k) / Σ_{c present} (N/N_c) for classes present, 0 for absent ones (Eq. 2).

    labels: (N,) class indices of the training masks. Returns (C,) float64 summing to 1.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    n = counts.sum()
    inv = np.zeros(num_classes)
    present = counts > 0
    inv[present] = n / counts[present]
    return inv / inv.sum() if inv.sum() > 0 else inv


def nothing_to_learn(labels: np.ndarray, names: list[str] | tuple[str, ...], *, folds: int | None = None) -> str | None:
    """Why ψ cannot learn anything from these answers (None when it can): then LCM corrects nothing.

    labels: (N,) the non-void answers ψ would be trained on; names: (C,) class names; folds: the
    calibrated selection's ``lcm.folds`` (it needs at least that many answers to score each out of fold).
    Not in the paper (its rounds have 10,000 answers): no answers, or answers of a single class (ψ then
    predicts that class for every mask with confidence ≈ 1 — nothing to discriminate), or too few
    for the folds. Returned as one sentence for ``lcm.h5``'s ``reason``.
    """
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return "no non-void answers to learn from"
    present = np.unique(labels)
    if len(present) < 2:
        k = int(present[0])
        name = names[k] if 0 <= k < len(names) else str(k)
        return (f"all {len(labels)} non-void answers are of one class ({name}): ψ has nothing to discriminate "
                "and would relabel every mask into it")
    if folds is not None and len(labels) < folds:
        return (f"{len(labels)} non-void answers, fewer than lcm.folds = {folds}: no out-of-fold scores "
                "for the calibrated selection")
    return None


def train_lcm(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    epochs: int = 100,
    batch_size: int = 8,
    lr: float = 1e-4,
    hidden: tuple[int, ...] = (256, 128, 64),
    seed: int = 0,
    min_steps: int | None = None,
    progress: str | None = None,
    loss: str = "ce",
) -> tuple[LCMNet, dict[str, Any]]:
    """Train ψ on (N,F) features and (N,) labels with Adam and class-weighted CE on logits (Eq. 2).

    ``epochs`` passes over the data, raised to reach ``min_steps`` optimiser steps when given.
    ``loss``: "ce" = the weighted CE on ψ's logits (Eq. 2 as written); "softmax-ce" = the same CE
    applied to ψ's softmax outputs (softmax twice, the authors' code): its loss cannot reach 0, so
    training keeps pushing ψ's confidence towards 1. Raises ValueError for another value.

    The minibatch loop indexes pre-built tensors (no DataLoader), so the
    authors' batch size of 8 costs microseconds per step.
    ``progress``: the title of a progress bar (optimiser steps, with the epoch's mean loss); None: no bar.
    """
    from contextlib import nullcontext

    if len(labels) == 0:
        raise A2LCError("the label correction module has nothing to learn from: no non-void answers this round")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(features, np.float32))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    lam = class_loss_weights(labels, num_classes)
    model = LCMNet(x.shape[1], num_classes, tuple(hidden))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if loss not in LCM_LOSSES:
        raise ValueError(f"unknown LCM loss {loss!r} (choose from {', '.join(LCM_LOSSES)})")
    ce = nn.CrossEntropyLoss(weight=torch.as_tensor(lam, dtype=torch.float32))
    loss_fn = ce if loss == "ce" else (lambda logits, target: ce(torch.softmax(logits, 1), target))
    n = len(y)
    steps_per_epoch = math.ceil(n / batch_size)
    if min_steps:
        epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    losses = []
    model.train()
    with ui.ProgressBar(progress, total=epochs * steps_per_epoch) if progress else nullcontext() as bar:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            total = 0.0
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                batch_loss = loss_fn(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                total += batch_loss.item() * len(idx)
            losses.append(total / n)
            if bar is not None:
                bar.advance(steps_per_epoch, status=f"loss {losses[-1]:.4f}")
            faults.checkpoint("lcm.epoch")
    model.eval()
    with torch.no_grad():
        train_acc = float((model(x).argmax(1) == y).float().mean())
    return model, {"loss": losses, "train_accuracy": train_acc, "class_weight": lam.tolist(),
                   "samples": int(n), "epochs": int(epochs), "steps": int(epochs * steps_per_epoch)}


# --------------------------------------------------------------------------- selection criteria
def tail_classes(counts: np.ndarray, alpha: float, *, size: str = "floor") -> tuple[np.ndarray, int]:
    """The tail classes and the rarest class from per-class counts (Eq. 5–6).

    counts: (C,) number of answers (or labels) per class. Classes are ordered by
    count ascending (ties by class index; zero counts first). The tail is the
    first T of them, T = ⌊α·|C|⌋ (``size="floor"``, the authors' code: 9 of 19, 10 of 21)
    or ⌈α·|C|⌉ (``"ceil"``: 10 of 19, 11 of 21); the rarest class is the first.
    Returns (tail (T,) int64 class ids, rarest class id). Raises ValueError for another ``size``.
    """
    if size not in ("floor", "ceil"):
        raise ValueError(f"unknown tail size rule {size!r} (choose from floor, ceil)")
    counts = np.asarray(counts)
    order = np.argsort(counts, kind="stable")
    # α·C computed in float: round first so 0.5·19 = 9.5 exactly and 0.3·10 = 3 stays 3
    x = round(alpha * len(counts), 9)
    t = int(math.floor(x) if size == "floor" else math.ceil(x))
    return np.sort(order[:t]).astype(np.int64), int(order[0])


def predict_confidence(model: LCMNet, features: np.ndarray, *, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """ψ's prediction and log-confidence for (M,F) features.

    The log-softmax is taken in float64 so that confidences like 0.9999999
    (τ_5) are resolved: float32 softmax rounds them to 1.
    Returns (pred (M,) int64, log max-probability (M,) float64).
    """
    preds, logc = [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(features), batch):
            z = model(torch.as_tensor(np.asarray(features[s:s + batch], np.float32))).double()
            lp = torch.log_softmax(z, 1)
            m, c = lp.max(1)
            preds.append(c.numpy())
            logc.append(m.numpy())
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(preds), np.concatenate(logc)


def _log_tau(tau: float) -> float:
    """log τ for Eq. 4 in log space; τ = 0 (allowed by the config: every confidence passes) is −inf."""
    return math.log(tau) if tau > 0 else -math.inf


def select_corrections(
    pred: np.ndarray,
    log_conf: np.ndarray,
    current: np.ndarray,
    eligible: np.ndarray,
    *,
    tau: float,
    tail: np.ndarray,
    rarest: int,
) -> np.ndarray:
    """(M,) bool: masks to relabel with ``pred`` — all four criteria of SPEC §3 (Eq. 3–6).

    pred, current: (M,) predicted and current labels; log_conf: (M,) float64 log max-prob;
    eligible: (M,) masks never queried.
    """
    j1 = log_conf >= _log_tau(tau)  # Eq. 4, in log space (float64)
    j2 = ~np.isin(pred, tail)  # Eq. 5
    j3 = current != rarest  # Eq. 6
    j4 = pred != current
    return eligible & j1 & j2 & j3 & j4


# the stage part lives in lcm_stage.py; its names stay importable from here
_STAGE_NAMES = ("run_lcm_train", "run_lcm_correct", "load_lcm", "evaluate_lcm_accuracy", "lcm_enabled",
                "_training_set", "_require_lcm_round", "_pct")


def __getattr__(name: str) -> Any:
    if name in _STAGE_NAMES:
        from . import lcm_stage

        return getattr(lcm_stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
