"""The LCM's stages (``lcm-train``, ``lcm-correct``) and its metric: read the round's artifacts,
call the math of :mod:`a2lc_cli.lcm` (paper Eq. 1–6), write ``lcm.pt`` / ``lcm.h5``.

The names stay importable from :mod:`a2lc_cli.lcm` (``from a2lc_cli.lcm import run_lcm_train``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .state import check_acquisition_fits, mask_features, read_acquisition
from .config import Config, resolve_lcm, resolve_method
from .errors import A2LCError
from .stage_inputs import StageInputs, given
from .stages import ACQUIRE, LCM_CORRECT, LCM_TRAIN, QUERY, artifact_path, current_inputs, is_current
from .round_state import mask_state
from .state import Dataset, read_corrections, read_query, write_corrections
from .store import load_torch, save_torch, torch_stamp
from .workspace import Workspace
from .lcm import LCMNet, _log_tau, nothing_to_learn, predict_confidence, select_corrections, tail_classes, train_lcm  # noqa: F401


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
    LCM_TRAIN.check_round(r, what="the label correction module (lcm-train, lcm-correct)")


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
        reason = nothing_to_learn(labels, ds.classes.names)
        if reason is not None:  # LCM corrects nothing this round and says why (lcm-correct records it)
            return save_untrained(ws, cfg, r, in_dim=int(feats.shape[1]), class_names=list(ds.classes.names),
                                  counts=counts, reason=reason, selection="paper")
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


def save_untrained(ws: Workspace, cfg: Config, r: int, *, in_dim: int, class_names: list[str], counts: np.ndarray,
                   reason: str, selection: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save ``lcm.pt`` for a round whose answers give ψ nothing to learn (:func:`a2lc_cli.lcm.nothing_to_learn`):
    an untrained ψ (never applied) and ``skipped`` = the reason, so that ``lcm-correct`` writes an ``lcm.h5``
    with no corrections and that reason, and the round goes on (θ is retrained on the answers)."""
    import torch

    torch.manual_seed(cfg.seed * 1009 + r)
    model = LCMNet(in_dim, len(class_names), tuple(cfg.lcm.hidden))
    log = {"loss": [], "train_accuracy": None, "samples": int(np.sum(counts)), "steps": 0, "epochs": 0}
    ckpt = {
        **torch_stamp("lcm", current_inputs(ws, LCM_TRAIN, r)), "selection": selection, "skipped": reason,
        "state_dict": model.state_dict(), "in_dim": in_dim, "num_classes": len(class_names),
        "hidden": list(cfg.lcm.hidden), "answer_counts": np.asarray(counts).tolist(), "class_names": class_names,
        "log": log, "options": cfg.lcm.model_dump(mode="json"), "round": r, "seconds": 0.0, **(extra or {}),
    }
    out = artifact_path(ws, r, LCM_TRAIN)
    save_torch(ckpt, out)
    return {"round": r, "selection": selection, "samples": log["samples"], "steps": 0, "final_loss": None,
            "train_accuracy": None, "skipped": reason, "seconds": 0.0, "path": str(out)}


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


def run_lcm_correct(ws: Workspace, cfg: Config, r: int, *, inputs: StageInputs | None = None) -> dict[str, Any]:
    """STEP 2: relabel the never-queried masks that pass all criteria; write ``rounds/rNNN/lcm.h5``.

    inputs: ψ_r's loader (:class:`a2lc_cli.stage_inputs.StageInputs`; None: :func:`load_lcm` of round r's ``lcm.pt``).
    """
    _require_lcm_round(cfg, r)
    apath, mpath = artifact_path(ws, r, ACQUIRE), artifact_path(ws, r, LCM_TRAIN)
    model, ckpt = given(inputs).load_lcm(mpath)
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
        if ckpt.get("skipped"):
            return write_no_corrections(ws, r, ds, state.label, ~state.queried, str(ckpt["skipped"]),
                                        _paper_meta(cfg, r, tau, tail=[], rarest=None))
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
        meta = _paper_meta(cfg, r, tau, tail=tail.tolist(), rarest=rarest)
        with write_corrections(artifact_path(ws, r, LCM_CORRECT), inputs=inputs, meta=meta, pred=pred, log_confidence=logc,
                               previous=state.label, ids=ids, eligible=eligible, tail=tail):
            pass
        return {
            "round": r, "eligible": int(eligible.sum()), "corrected": int(len(ids)), "tau": tau,
            "tail": [ds.classes.names[c] for c in tail], "rarest": ds.classes.names[rarest],
            "confident": int((logc[eligible] >= _log_tau(tau)).sum()),
        }


def _paper_meta(cfg: Config, r: int, tau: float, *, tail: list[int], rarest: int | None) -> dict[str, Any]:
    """``lcm.h5``'s meta under the paper's rule: τ_r, the tail and rarest class (Eq. 4–5) and the settings behind them."""
    return {"selection": "paper", "tau": tau, "alpha": cfg.lcm.alpha, "tail": tail, "rarest": rarest,
            "tail_from": cfg.lcm.tail_from, "tail_size": cfg.lcm.tail_size, "round": r}


def write_no_corrections(ws: Workspace, r: int, ds: Dataset, current: np.ndarray, eligible: np.ndarray, reason: str,
                         meta: dict[str, Any], calibration: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Write round r's ``lcm.h5`` with no corrections because ψ had nothing to learn (``reason``, in the meta):
    ψ's class 255 and log-confidence −inf for every mask (ψ was not applied). ``calibration``: the calibrated
    selection's per-class arrays (no thresholds). Returns the stage's result."""
    inputs = current_inputs(ws, LCM_CORRECT, r)
    n = len(current)
    with write_corrections(artifact_path(ws, r, LCM_CORRECT), inputs=inputs, meta={**meta, "reason": reason, "corrected": 0},
                           pred=np.full(n, 255, np.int64), log_confidence=np.full(n, -np.inf),
                           previous=np.asarray(current), ids=np.zeros(0, np.int64), eligible=np.zeros(n, bool),
                           tail=np.zeros(0, np.int64), calibration=calibration):
        pass
    out = {"round": r, "selection": meta["selection"], "eligible": int(np.sum(eligible)), "corrected": 0, "reason": reason}
    if meta["selection"] == "paper":
        out.update({"tau": meta["tau"], "confident": 0, "tail": [], "rarest": None})
    return out


def evaluate_lcm_accuracy(ws: Workspace, r: int | None, **_: Any) -> dict[str, Any]:
    """Paper Table 3: masks corrected automatically in round r and the share whose label matches
    the ground-truth majority before and after the correction (masks with a void GT majority excluded).

    Without ground truth the measured fields are None. ``reason``: why ψ was not trained (nothing to learn
    from), else None; under the calibrated selection also why nothing was corrected. Under the calibrated
    selection the result also has every class's threshold (or why none), evidence, estimated precision and
    its lower bound (``by_class``; pooled classes marked) and the round's ``outside_overlap`` count.
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
                               "tau": meta.get("tau"), "reason": meta.get("reason"), "by_new_label": {}}
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

        if c.calibration is None:
            raise A2LCError(f"{path}: the calibrated selection's thresholds are missing; rerun `a2lc lcm-correct`")
        out.update(calibration_report(c.calibration, meta, names, c.label, gt))
    return out


def _pct(x: np.ndarray) -> float | None:
    return round(100.0 * float(np.mean(x)), 4) if len(x) else None


def lcm_enabled(cfg: Config) -> bool:
    return bool(resolve_method(cfg.method)["lcm"])
