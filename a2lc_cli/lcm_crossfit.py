"""Cross-fitted ψ for the calibrated LCM selection: k fold models and the final model, trained together.

The answered masks are split into k class-stratified folds. Model j (j < k) is
trained on every fold but j and scores fold j, so every answered mask gets an
out-of-fold prediction and confidence from a ψ that never saw its answer. Model k
(the final ψ) is trained on all answers and is the one that relabels the
never-queried masks.

The k + 1 networks are one stacked MLP (weights (k+1, in, out), batched matrix
products), trained in a single loop: each step draws a minibatch for every
member from its own training rows. Adam's update is elementwise, so this is the
same as k + 1 separate Adam optimisers, at the cost of about one. Every member
runs the same number of steps — the final ψ's recipe, ``epochs`` passes of
``batch_size`` over all answers (raised to ``min_steps``) — so the fold models'
confidences are on the final ψ's scale, which is what the thresholds assume.
Loss: class-weighted cross-entropy on logits (paper Eq. 2), λ from each
member's own training rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import faults
from .errors import A2LCError
from .lcm import LCMNet, class_loss_weights, predict_confidence


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold index in 0..k-1 of each row: shuffled, then dealt round-robin within each class.

    Each class's rows are spread as evenly as possible over the folds. Raises A2LCError when N < k.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if n < k:
        raise A2LCError(f"calibrated LCM selection needs at least {k} answers for {k}-fold cross-fitting (got {n})")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]  # by class, random within a class
    start = np.searchsorted(labels[order], labels[order], side="left")  # first position of each row's class
    rank = np.arange(n) - start
    offset = rng.integers(0, k, size=labels.max() + 1)[labels[order]]  # classes do not all start at fold 0
    fold = np.empty(n, np.int64)
    fold[order] = (rank + offset) % k
    return fold


@dataclass
class CrossFit:
    """What cross-fitting gives: the final ψ and the out-of-fold scores of the training rows (all (N,))."""

    model: LCMNet
    fold: np.ndarray
    pred: np.ndarray  # out-of-fold prediction
    log_confidence: np.ndarray  # out-of-fold log max-probability, float64
    log: dict[str, Any]


class _Stacked(torch.nn.Module):
    """M independent MLPs in → hidden… → C (ReLU), evaluated together on (M, B, in) inputs."""

    def __init__(self, members: int, in_dim: int, num_classes: int, hidden: tuple[int, ...], gen: torch.Generator):
        super().__init__()
        dims = (in_dim, *hidden, num_classes)
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(a)  # torch.nn.Linear's default initialisation (kaiming-uniform, a=√5)
            self.weights.append(torch.nn.Parameter((torch.rand(members, a, b, generator=gen) * 2 - 1) * bound))
            self.biases.append(torch.nn.Parameter(((torch.rand(members, 1, b, generator=gen) * 2 - 1) * bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                x = torch.relu(x)
        return x

    def member(self, j: int, hidden: tuple[int, ...]) -> LCMNet:
        """Member j as a plain :class:`LCMNet` (its weights copied)."""
        in_dim, c = self.weights[0].shape[1], self.weights[-1].shape[2]
        net = LCMNet(in_dim, c, hidden)
        linears = [m for m in net.net if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(linears, self.weights, self.biases):
                lin.weight.copy_(w[j].T)
                lin.bias.copy_(b[j, 0])
        net.eval()
        return net


def _adam(net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel where this torch has it on CPU (2.4+: half the step time here), else the default."""
    try:
        return torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(net.parameters(), lr=lr)


def _index_streams(rows: list[np.ndarray], steps: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, M, batch) row indices: member m reads its rows in successive random permutations."""
    out = np.empty((steps, len(rows), batch), np.int64)
    need = steps * batch
    for m, r in enumerate(rows):
        reps = math.ceil(need / len(r))
        stream = np.concatenate([r[rng.permutation(len(r))] for _ in range(reps)])[:need]
        out[:, m, :] = stream.reshape(steps, batch)
    return out


def train_crossfit(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    epochs: int = 100,
    batch_size: int = 8,
    lr: float = 1e-4,
    hidden: tuple[int, ...] = (256, 128, 64),
    seed: int = 0,
    min_steps: int | None = None,
) -> CrossFit:
    """Train k fold models and the final ψ on (N,F) features and (N,) labels; score every row out of fold.

    Steps for every member: ``epochs · ⌈N / batch_size⌉``, raised to ``min_steps``. Deterministic for a
    given seed. Raises A2LCError with no rows or fewer rows than folds.
    """
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        raise A2LCError("the label correction module has nothing to learn from: no non-void answers")
    fold = stratified_folds(labels, folds, seed)
    rows = [np.flatnonzero(fold != j) for j in range(folds)] + [np.arange(len(labels))]
    members = folds + 1
    steps = epochs * math.ceil(len(labels) / batch_size)
    if min_steps:
        steps = max(steps, int(min_steps))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(np.asarray(features, np.float32))
    y = torch.as_tensor(labels)
    lam = torch.as_tensor(np.stack([class_loss_weights(labels[r], num_classes) for r in rows]), dtype=torch.float32)
    net = _Stacked(members, x.shape[1], num_classes, tuple(hidden), gen)
    opt = _adam(net, lr)
    idx = torch.as_tensor(_index_streams(rows, steps, batch_size, rng))
    member_ids = torch.arange(members)[:, None]
    per_epoch = math.ceil(len(labels) / batch_size)
    losses = []
    total = torch.zeros(members)
    for s in range(steps):
        ib = idx[s]  # (M, B)
        yb = y[ib]
        logp = torch.log_softmax(net(x[ib]), 2)
        nll = -logp.gather(2, yb[..., None])[..., 0]  # (M, B)
        w = lam[member_ids, yb]
        loss_m = (w * nll).sum(1) / w.sum(1)  # torch's weighted-mean cross-entropy, per member
        opt.zero_grad(set_to_none=True)
        loss_m.sum().backward()
        opt.step()
        total += loss_m.detach()
        if (s + 1) % per_epoch == 0 or s + 1 == steps:
            losses.append(float(total[-1]) / ((s % per_epoch) + 1))
            total.zero_()
            faults.checkpoint("lcm.epoch")
    net.eval()
    pred = np.empty(len(labels), np.int64)
    logc = np.empty(len(labels), np.float64)
    features = x.numpy()
    for j in range(folds):  # out of fold: the same float64 log-confidence as the final ψ's (lcm.predict_confidence)
        held = np.flatnonzero(fold == j)
        pred[held], logc[held] = predict_confidence(net.member(j, tuple(hidden)), features[held])
    with torch.no_grad():
        final = net.member(folds, tuple(hidden))
        train_acc = float((final(x).argmax(1) == y).float().mean())
    log = {"loss": losses, "train_accuracy": train_acc, "samples": int(len(labels)), "steps": int(steps),
           "epochs": int(math.ceil(steps / per_epoch)), "folds": int(folds),
           "out_of_fold_accuracy": float(np.mean(pred == labels)),
           "class_weight": lam[-1].tolist()}
    return CrossFit(model=final, fold=fold, pred=pred, log_confidence=logc, log=log)
