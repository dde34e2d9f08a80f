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
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import faults, ui
from .state import check_acquisition_fits, mask_features, read_acquisition
from .config import Config, resolve_lcm, resolve_method
from .errors import A2LCError
from .stages import ACQUIRE, LCM_CORRECT, LCM_TRAIN, QUERY, artifact_path, current_inputs, is_current
from .round_state import mask_state
from .state import (Dataset, open_artifact, read_array, read_corrections, read_query,
                    write_corrections)
from .store import load_torch, save_torch, torch_stamp
from .workspace import Workspace


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


# --------------------------------------------------------------------------- stages
def _training_set(ws: Workspace, cfg: Config, ds: Dataset, r: int, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask ids, labels, per-class answer counts of round r) of the masks ψ_r learns from."""
    rounds = range(1, r + 1) if resolve_lcm(cfg)["train_on"] == "all" else [r]
    ids_all, labels_all = [], []
    counts = np.zeros(ds.num_classes, np.int64)
    for k in rounds:
        q = read_query(ws.path(QUERY, k))
        ids, labels = q.answers.effective()
        keep = labels != 255
        ids_all.append(ids[keep])
        labels_all.append(labels[keep])
        if k == r:
            counts = np.bincount(labels[keep].astype(np.int64), minlength=ds.num_classes)[: ds.num_classes]
    return np.concatenate(ids_all), np.concatenate(labels_all), counts


def _require_lcm_round(cfg: Config, r: int) -> None:
    if r < 1:
        raise A2LCError("the label correction module runs in rounds ≥ 1")


def run_lcm_train(ws: Workspace, cfg: Config, r: int, *, seed: int | None = None) -> dict[str, Any]:
    """STEP 1: train ψ_r on round r's answers; save ``rounds/rNNN/lcm.pt``."""
    _require_lcm_round(cfg, r)
    if resolve_lcm(cfg)["selection"] == "calibrated":  # beyond the paper: k-fold cross-fitted ψ (lcm_calibrated.py)
        from .lcm_calibrated import run_lcm_train_calibrated

        return run_lcm_train_calibrated(ws, cfg, r, seed=seed)
    qpath, apath = artifact_path(ws, r, QUERY), artifact_path(ws, r, ACQUIRE)
    if not qpath.exists():
        raise A2LCError(f"{qpath} does not exist; run `a2lc query --r {r}` first")
    acq = read_acquisition(apath)
    feats = mask_features(acq)
    t0 = time.perf_counter()
    with Dataset(ws.dataset_path) as ds:
        check_acquisition_fits(acq, ds, apath)
        ids, labels, counts = _training_set(ws, cfg, ds, r, feats)
        from .threads import stage_threads

        with stage_threads("lcm-train", cfg):
            model, log = train_lcm(
                feats[ids], labels, ds.num_classes, epochs=cfg.lcm.epochs, batch_size=cfg.lcm.batch_size,
                lr=cfg.lcm.lr, hidden=tuple(cfg.lcm.hidden), seed=cfg.seed * 1009 + r if seed is None else seed,
                min_steps=cfg.lcm.min_steps, progress=f"lcm-train ψ_{r}", loss=cfg.lcm.loss,
            )
        class_names = list(ds.classes.names)
    seconds = time.perf_counter() - t0
    inputs = current_inputs(ws, LCM_TRAIN, r)  # {query, acquire}
    ckpt = {
        **torch_stamp("lcm", inputs), "state_dict": model.state_dict(), "in_dim": int(feats.shape[1]), "num_classes": len(class_names),
        "hidden": list(cfg.lcm.hidden), "answer_counts": counts.tolist(), "class_names": class_names,
        "log": log, "options": cfg.lcm.model_dump(mode="json"), "round": r, "seconds": seconds,
    }
    out = artifact_path(ws, r, LCM_TRAIN)
    save_torch(ckpt, out)
    return {"round": r, "samples": log["samples"], "steps": log["steps"], "final_loss": log["loss"][-1],
            "train_accuracy": log["train_accuracy"], "seconds": round(seconds, 2), "path": str(out)}


def load_lcm(path: Path) -> tuple[LCMNet, dict[str, Any]]:
    """Load ψ_r saved by :func:`run_lcm_train`."""
    if not path.exists():
        rnd = re.fullmatch(r"r(\d+)", path.parent.name)  # rounds/rNNN/lcm.pt: name the round in the hint
        raise A2LCError(f"{path} does not exist; run `a2lc lcm-train" + (f" --r {int(rnd[1])}" if rnd else "") + "` first")
    ckpt = load_torch(path, what="LCM checkpoint")  # weights only: a damaged or planted file cannot run code
    try:
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "lcm":
            raise ValueError("not an a2lc LCM checkpoint")
        model = LCMNet(int(ckpt["in_dim"]), int(ckpt["num_classes"]), tuple(ckpt["hidden"]))
        model.load_state_dict(ckpt["state_dict"])
    except (OSError, RuntimeError, KeyError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise A2LCError(f"{path}: not a readable LCM checkpoint ({' '.join(str(e).split())[:160]})") from None
    model.eval()
    return model, ckpt


def run_lcm_correct(ws: Workspace, cfg: Config, r: int) -> dict[str, Any]:
    """STEP 2: relabel the never-queried masks that pass all criteria; write ``rounds/rNNN/lcm.h5``."""
    _require_lcm_round(cfg, r)
    apath, mpath = artifact_path(ws, r, ACQUIRE), artifact_path(ws, r, LCM_TRAIN)
    model, ckpt = load_lcm(mpath)
    if not is_current(ws, LCM_TRAIN, r, ckpt.get("inputs")):
        raise A2LCError(f"{mpath} is stale (round {r}'s answers or acquisition changed); rerun `a2lc lcm-train --r {r}`")
    acq = read_acquisition(apath)
    feats = mask_features(acq)
    tau = cfg.tau_for_round(r)
    with Dataset(ws.dataset_path) as ds:
        check_acquisition_fits(acq, ds, apath)
        state = mask_state(ws, ds, r, include_lcm_of_last=False)
        if ds.num_classes != int(ckpt["num_classes"]):
            raise A2LCError(f"{mpath} has {ckpt['num_classes']} classes but the dataset has {ds.num_classes}")
        if resolve_lcm(cfg)["selection"] == "calibrated":  # per-class thresholds from cross-fitting (lcm_calibrated.py)
            from .lcm_calibrated import correct_calibrated

            inputs = current_inputs(ws, LCM_CORRECT, r)  # {query, acquire, lcm_model}
            model_pred = np.asarray(acq.dominant, np.int64)  # θ_{r-1}'s class of each mask
            return correct_calibrated(ws, cfg, r, ds, model, ckpt, feats, inputs, model_pred)
        if ckpt.get("selection", "paper") != "paper":
            raise A2LCError(f"{mpath} was trained for the calibrated selection; rerun `a2lc lcm-train --r {r}`")
        if cfg.lcm.tail_from == "dataset":
            counts = np.bincount(state.label[state.label != 255].astype(np.int64),
                                 weights=ds.mask_area[state.label != 255], minlength=ds.num_classes)[: ds.num_classes]
        else:
            counts = np.asarray(ckpt["answer_counts"])
        tail, rarest = tail_classes(counts, cfg.lcm.alpha, size=cfg.lcm.tail_size)
        from .threads import stage_threads

        with stage_threads("lcm-correct", cfg):
            pred, logc = predict_confidence(model, feats)
        eligible = ~state.queried
        chosen = select_corrections(pred, logc, state.label, eligible, tau=tau, tail=tail, rarest=rarest)
        ids = np.flatnonzero(chosen).astype(np.int64)
        inputs = current_inputs(ws, LCM_CORRECT, r)  # {query, acquire, lcm_model}
        meta = {"selection": "paper", "tau": tau, "alpha": cfg.lcm.alpha, "tail": tail.tolist(), "rarest": rarest,
                "tail_from": cfg.lcm.tail_from, "tail_size": cfg.lcm.tail_size, "round": r}
        with write_corrections(artifact_path(ws, r, LCM_CORRECT), inputs=inputs, meta=meta, pred=pred, log_confidence=logc,
                               previous=state.label, ids=ids, eligible=eligible) as f:
            f.create_dataset("tail", data=tail)
        return {
            "round": r, "eligible": int(eligible.sum()), "corrected": int(len(ids)), "tau": tau,
            "tail": [ds.classes.names[c] for c in tail], "rarest": ds.classes.names[rarest],
            "confident": int((logc[eligible] >= _log_tau(tau)).sum()),
        }


def evaluate_lcm_accuracy(ws: Workspace, r: int | None, **_: Any) -> dict[str, Any]:
    """Paper Table 3: masks corrected automatically in round r and the share whose label matches
    the ground-truth majority before and after the correction (masks with a void GT majority excluded).

    Without ground truth the measured fields are None. Under the calibrated selection the result also
    has the per-class thresholds, the estimated precision and its lower bound (``by_class``).
    """
    if r is None:
        r = ws.latest_round(LCM_CORRECT)
        if r is None:
            raise A2LCError("no round has automatic corrections yet; run `a2lc lcm-correct --r R`")
    path = ws.path(LCM_CORRECT, r)
    c = read_corrections(path)
    meta = c.attrs.get("meta", {})
    with Dataset(ws.dataset_path) as ds:
        names = ds.classes.names
        out: dict[str, Any] = {"metric": "lcm-accuracy", "round": r, "selection": meta.get("selection", "paper"),
                               "corrected": int(len(c.mask)), "void_gt": None, "accuracy_before": None,
                               "accuracy_after": None, "correct_before": None, "correct_after": None,
                               "tau": meta.get("tau"), "by_new_label": {}}
        gt = ds.mask_column("gt_label")[c.mask] if ds.has_gt else None
    if gt is not None:
        valid = gt != 255
        before = c.previous[valid] == gt[valid]
        after = c.label[valid] == gt[valid]
        per_class = {}
        for k in np.unique(c.label[valid]):
            sel = c.label[valid] == k
            per_class[names[k]] = {"corrected": int(sel.sum()), "before": _pct(before[sel]), "after": _pct(after[sel])}
        out.update({"void_gt": int((~valid).sum()), "accuracy_before": _pct(before), "accuracy_after": _pct(after),
                    "correct_before": int(before.sum()), "correct_after": int(after.sum()), "by_new_label": per_class})
    if out["selection"] == "calibrated":
        from .lcm_calibrated import calibration_report

        out.update(calibration_report(path, meta, names, c.label, gt))
    return out


def _pct(x: np.ndarray) -> float | None:
    return round(100.0 * float(np.mean(x)), 4) if len(x) else None


def lcm_enabled(cfg: Config) -> bool:
    return bool(resolve_method(cfg.method)["lcm"])
