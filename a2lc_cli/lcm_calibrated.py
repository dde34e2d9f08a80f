"""The stages ``lcm-train`` / ``lcm-correct`` under ``lcm.selection = calibrated`` (preset ``a2lc+``).

``lcm-train`` cross-fits ψ on the answers (all rounds so far by default) and
saves, next to the final ψ, every answered mask's out-of-fold prediction and
confidence, its answer and its label just before the answer. ``lcm-correct``
chooses the per-class thresholds from those scores
(:func:`a2lc_cli.lcm_calibration.calibrate_thresholds`) and lets the final ψ
relabel the never-queried masks that reach them. The method is in
:mod:`a2lc_cli.lcm_crossfit` and :mod:`a2lc_cli.lcm_calibration`; this module
only reads and writes the workspace. See docs/lcm-calibrated.md.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .acquire import mask_features, read_acquisition
from .config import Config, resolve_lcm
from .errors import A2LCError
from .lcm_calibration import SOURCE_NAMES, ClassThresholds, calibrate_thresholds, precision_summary, select_calibrated
from .lcm import nothing_to_learn
from .lcm_crossfit import train_crossfit
from .lcm_shift import overlap_weights, shift_covariates
from .state import Dataset, mask_state, read_query, write_corrections
from .stages import LCM_TRAIN, current_inputs
from .store import save_torch, torch_stamp
from .workspace import Workspace

CALIBRATION_KEYS = ("mask", "answer", "previous", "pred", "log_confidence", "fold", "model_pred", "prob")


def answered_masks(ws: Workspace, cfg: Config, ds: Dataset, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mask ids, answers, labels just before the answer, round of the answer), (N,) each, of the non-void
    answers ψ_r learns from.

    ``lcm.train_on`` (resolved against the preset) picks round r only or rounds 1..r. The label before the
    answer of a mask queried in round k is its label after round k − 1 (pseudo-label or earlier correction).
    """
    rounds = range(1, r + 1) if resolve_lcm(cfg)["train_on"] == "all" else [r]
    ids_all, labels_all, prev_all, round_all = [], [], [], []
    for k in rounds:
        ids, labels = read_query(ws.path("query", k)).answers.effective()
        keep = labels != 255
        before = mask_state(ws.root, ds, k - 1).label
        ids_all.append(ids[keep].astype(np.int64))
        labels_all.append(labels[keep].astype(np.int64))
        prev_all.append(before[ids[keep]].astype(np.int64))
        round_all.append(np.full(int(keep.sum()), k, np.int64))
    return np.concatenate(ids_all), np.concatenate(labels_all), np.concatenate(prev_all), np.concatenate(round_all)


def query_time_view(ws: Workspace, ids: np.ndarray, rounds: np.ndarray, current: dict[str, Any],
                    r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N,F), mean softmax (N,C), dominant class (N,)) of each answered mask as its round's
    acquisition saw it: computed by θ_{k−1}, before the answer of round k could reach the model.

    The current round's acquisition (``current``, round r) serves round r's answers; earlier rounds'
    ``acquire.h5`` the others. A2LCError when one is missing or has other feature shapes.
    """
    feats = mask_features(current)
    out_f = np.empty((len(ids), feats.shape[1]), np.float32)
    out_p = np.empty((len(ids), current["mean_prob"].shape[1]), np.float32)
    out_d = np.empty(len(ids), np.int64)
    for k in np.unique(rounds):
        acq = current if k == r else read_acquisition(ws.path("acquire", int(k)))
        f = mask_features(acq)
        if f.shape[1:] != feats.shape[1:] or acq["mean_prob"].shape[1:] != current["mean_prob"].shape[1:]:
            raise A2LCError(f"round {k}'s acquisition has other feature shapes than round {r}'s "
                            "(method.feature changed?); set lcm.evidence_features=current or rerun the rounds")
        sel = rounds == k
        out_f[sel], out_p[sel] = f[ids[sel]], acq["mean_prob"][ids[sel]]
        out_d[sel] = np.asarray(acq["dominant"], np.int64)[ids[sel]]
    return out_f, out_p, out_d


def run_lcm_train_calibrated(ws: Workspace, cfg: Config, r: int, *, seed: int | None = None) -> dict[str, Any]:
    """Cross-fit ψ_r (k fold models + the final one); save ``rounds/rNNN/lcm.pt`` with the out-of-fold scores."""
    qpath, apath = ws.path("query", r), ws.path("acquire", r)
    if not qpath.exists():
        raise A2LCError(f"{qpath} does not exist; run `a2lc query --r {r}` first")
    acq = read_acquisition(apath)
    feats = mask_features(acq)
    lc = cfg.lcm
    t0 = time.perf_counter()
    with Dataset(ws.dataset_path) as ds:
        ids, labels, previous, rounds = answered_masks(ws, cfg, ds, r)
        reason = nothing_to_learn(labels, ds.classes.names, folds=lc.folds)
        if reason is not None:  # no corrections this round, the reason recorded; the round goes on
            from .lcm_stage import save_untrained

            counts = np.bincount(labels, minlength=ds.num_classes)[: ds.num_classes]
            return save_untrained(ws, cfg, r, in_dim=int(feats.shape[1]), class_names=list(ds.classes.names),
                                  counts=counts, reason=reason, selection="calibrated")
        if lc.evidence_features == "query-time":  # what acquisition saw before the answer reached θ
            x, prob, model_pred = query_time_view(ws, ids, rounds, acq, r)
        else:  # this round's acquisition: θ_{r−1} has been trained on the earlier rounds' answers
            x, prob, model_pred = feats[ids], acq["mean_prob"][ids], np.asarray(acq["dominant"], np.int64)[ids]
        cf = train_crossfit(x, labels, ds.num_classes, folds=lc.folds, epochs=lc.epochs,
                            batch_size=lc.calibrated_batch_size, lr=lc.calibrated_lr, hidden=tuple(lc.hidden),
                            seed=cfg.seed * 1009 + r if seed is None else seed, min_steps=lc.min_steps)
        class_names = list(ds.classes.names)
        counts = np.bincount(labels, minlength=ds.num_classes)[: ds.num_classes]
    seconds = time.perf_counter() - t0
    calibration = {"mask": ids, "answer": labels, "previous": previous, "pred": cf.pred,
                   "log_confidence": cf.log_confidence, "fold": cf.fold, "model_pred": model_pred,
                   "prob": np.asarray(prob, np.float32), "round": rounds}
    ckpt = {
        **torch_stamp("lcm", current_inputs(ws, LCM_TRAIN, r)), "selection": "calibrated", "state_dict": cf.model.state_dict(), "in_dim": int(feats.shape[1]),
        "num_classes": len(class_names), "hidden": list(lc.hidden), "answer_counts": counts.tolist(),
        "class_names": class_names, "log": cf.log, "options": lc.model_dump(mode="json"), "round": r,
        "seconds": seconds,
        "calibration": {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in calibration.items()},
    }
    out = ws.path("lcm-train", r)
    save_torch(ckpt, out)  # the shared torch header and atomic writer (store.py)
    return {"round": r, "selection": "calibrated", "samples": cf.log["samples"], "steps": cf.log["steps"],
            "folds": cf.log["folds"], "final_loss": cf.log["loss"][-1], "train_accuracy": cf.log["train_accuracy"],
            "out_of_fold_accuracy": cf.log["out_of_fold_accuracy"], "seconds": round(seconds, 2), "path": str(out)}


def calibration_arrays(ckpt: dict[str, Any], path) -> dict[str, np.ndarray]:
    """The out-of-fold scores saved by :func:`run_lcm_train_calibrated` (A2LCError when absent or malformed)."""
    cal = ckpt.get("calibration")
    if ckpt.get("selection") != "calibrated" or not isinstance(cal, dict):
        raise A2LCError(f"{path} was trained for the paper's selection, not the calibrated one; "
                        f"rerun `a2lc lcm-train --r {ckpt.get('round', 'R')}`")
    try:
        arrays = {k: np.asarray(cal[k].numpy()) for k in CALIBRATION_KEYS}
    except (KeyError, AttributeError, TypeError):
        raise A2LCError(f"{path}: calibration scores are missing or malformed; rerun `a2lc lcm-train`") from None
    if len({len(v) for v in arrays.values()}) != 1:
        raise A2LCError(f"{path}: calibration arrays of different lengths; rerun `a2lc lcm-train`")
    return arrays


def answered_situations(a: dict[str, np.ndarray], require_model_agreement: bool) -> np.ndarray:
    """(N,) bool: the answered masks that are situations of a correction (as :func:`calibrate_thresholds`)."""
    out = a["pred"] != a["previous"]
    return out & (a["pred"] == a["model_pred"]) if require_model_agreement else out


def shift_weights(cfg: Config, a: dict[str, np.ndarray], never: dict[str, np.ndarray], area: np.ndarray,
                  num_classes: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Importance weights of the answered masks toward the never-queried situations inside the overlap
    ((N,), 0 off the answered situations and outside the overlap; None with ``lcm.reweight = none``), and
    (N_u,) bool: which never-queried situations are inside the overlap (all with ``none``).

    ``never``: pred, log_confidence, label, prob, area of the never-queried situations; area: (M,) every
    mask's pixels. See :func:`a2lc_cli.lcm_shift.overlap_weights`."""
    n_u = len(never["pred"])
    if cfg.lcm.reweight == "none":
        return None, np.ones(n_u, bool)
    sit = answered_situations(a, cfg.lcm.require_model_agreement)
    z_a = shift_covariates(a["log_confidence"][sit], a["pred"][sit], a["previous"][sit], a["prob"][sit],
                           area[a["mask"][sit]], num_classes)
    z_u = shift_covariates(never["log_confidence"], never["pred"], never["label"], never["prob"],
                           never["area"], num_classes)
    w = np.zeros(len(sit))
    w[sit], inside = overlap_weights(z_a, z_u, l2=cfg.lcm.reweight_l2, max_ratio=cfg.lcm.max_density_ratio)
    return w, inside


def thresholds_from_checkpoint(cfg: Config, ckpt: dict[str, Any], path, num_classes: int,
                               weight: np.ndarray | None = None) -> ClassThresholds:
    """Per-class thresholds of the config's target from a calibrated checkpoint's scores (weight: (N,) or None)."""
    a = calibration_arrays(ckpt, path)
    lc = cfg.lcm
    return calibrate_thresholds(a["pred"], a["log_confidence"], a["answer"], a["previous"], num_classes,
                                target_precision=lc.target_precision, confidence=lc.confidence,
                                min_class_evidence=lc.min_class_evidence, min_class_answers=lc.min_class_answers,
                                model_pred=a["model_pred"] if lc.require_model_agreement else None, weight=weight)


def correct_calibrated(ws: Workspace, cfg: Config, r: int, ds: Dataset, model, ckpt: dict[str, Any], feats: np.ndarray,
                       inputs: dict[str, str], model_pred: np.ndarray) -> dict[str, Any]:
    """Relabel the never-queried masks that reach their predicted class's threshold; write ``lcm.h5``."""
    from .lcm import predict_confidence

    state = mask_state(ws.root, ds, r, include_lcm_of_last=False)
    lc = cfg.lcm
    path = ws.path("lcm-train", r)
    if ckpt.get("selection") != "calibrated":
        calibration_arrays(ckpt, path)  # the one-line refusal of a checkpoint trained for the paper's rule
    if ckpt.get("skipped"):  # ψ had nothing to learn from (lcm-train recorded why): no thresholds, no corrections
        from .lcm_stage import write_no_corrections

        c = ds.num_classes
        th = calibrate_thresholds(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), c)
        th.answers[:] = np.asarray(ckpt.get("answer_counts", np.zeros(c)), np.int64)[:c]
        meta = _calibrated_meta(cfg, r, th, outside_overlap=0, **precision_summary(th, np.zeros(0, np.int64)))
        res = write_no_corrections(ws, r, ds, state.label, ~state.queried, str(ckpt["skipped"]), meta,
                                   calibration=_calibration_arrays(th, np.zeros(c, np.int64)))
        return {**res, "estimated_precision": None, "precision_bound": None,
                "target_precision": lc.target_precision, "classes_with_threshold": []}
    pred, logc = predict_confidence(model, feats)
    eligible = ~state.queried
    weight, outside = None, np.zeros(len(pred), bool)
    if cfg.lcm.reweight != "none":  # the never-queried situations the thresholds will be applied to
        never = eligible & (pred != state.label)
        if cfg.lcm.require_model_agreement:
            never &= pred == model_pred
        prob = read_acquisition(ws.path("acquire", r))["mean_prob"]
        area = np.asarray(ds.mask_area, np.float64)
        weight, inside = shift_weights(cfg, calibration_arrays(ckpt, path),
                                       {"pred": pred[never], "log_confidence": logc[never], "label": state.label[never],
                                        "prob": prob[never], "area": area[never]}, area, ds.num_classes)
        outside[np.flatnonzero(never)[~inside]] = True  # no answered mask is like them: never corrected
    th = thresholds_from_checkpoint(cfg, ckpt, path, ds.num_classes, weight)
    chosen = select_calibrated(pred, logc, state.label, eligible & ~outside, th.log_threshold,
                               model_pred if cfg.lcm.require_model_agreement else None)
    ids = np.flatnonzero(chosen).astype(np.int64)
    per_class = np.bincount(pred[ids], minlength=ds.num_classes)[: ds.num_classes]
    summary = precision_summary(th, pred[ids])
    meta = _calibrated_meta(cfg, r, th, outside_overlap=int(outside.sum()), **summary)
    with write_corrections(ws.path("lcm-correct", r), inputs=inputs, meta=meta, pred=pred, log_confidence=logc,
                           previous=state.label, ids=ids, eligible=eligible, tail=np.zeros(0, np.int64),
                           calibration=_calibration_arrays(th, per_class)):
        pass
    names = ds.classes.names
    return {
        "round": r, "selection": "calibrated", "eligible": int(eligible.sum()), "corrected": int(len(ids)),
        "estimated_precision": summary["estimated_precision"], "precision_bound": summary["precision_bound"],
        "target_precision": lc.target_precision,
        "classes_with_threshold": [names[k] for k in np.flatnonzero(np.isfinite(th.log_threshold))],
    }


def _calibrated_meta(cfg: Config, r: int, th: ClassThresholds, *, outside_overlap: int, **summary: Any) -> dict[str, Any]:
    """``lcm.h5``'s meta under the calibrated selection: the round, the ``lcm.*`` settings that decided it, the
    never-queried situations outside the overlap, the evidence behind the thresholds and ``summary``
    (:func:`a2lc_cli.lcm_calibration.precision_summary`'s estimate and bound of the corrections made)."""
    lc = cfg.lcm
    pooled = th.pooled
    return {"selection": "calibrated", "round": r, "target_precision": lc.target_precision,
            "confidence": lc.confidence, "folds": lc.folds, "min_class_evidence": lc.min_class_evidence,
            "min_class_answers": lc.min_class_answers, "require_model_agreement": lc.require_model_agreement,
            "reweight": lc.reweight, "evidence_features": lc.evidence_features,
            "max_density_ratio": lc.max_density_ratio, "outside_overlap": outside_overlap,
            "effective_evidence": float(th.effective_evidence.sum()), "answers": int(th.answers.sum()),
            "pooled_threshold": None if pooled is None else float(np.exp(min(pooled.log_threshold, 0.0))),
            **summary}


def _calibration_arrays(th: ClassThresholds, corrected: np.ndarray) -> dict[str, np.ndarray]:
    """The (C,) arrays of ``lcm.h5``'s ``calibration`` group (corrected: corrections made per class)."""
    return {"log_threshold": th.log_threshold, "threshold": th.threshold(), "source": th.source,
            "evidence": th.evidence, "answers": th.answers, "support": th.support, "hits": th.hits,
            "precision": th.precision, "bound": th.bound, "effective": th.effective,
            "effective_evidence": th.effective_evidence, "corrected": corrected}


def calibration_by_class(cal: dict[str, np.ndarray], names: list[str],
                         meta: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per class that ψ was trained on, predicted out of fold, got a threshold or a correction: threshold (None
    when none), its source (``own``: the class's own situations; ``pooled``: the group of classes with little
    evidence — then ``support``, ``estimated_precision``, ``precision_bound`` and ``effective_support`` are the
    *group's*, marked by ``pooled: true``, not a promise about the class alone; ``none``), answers, evidence
    (its situations) and n_eff of them, support/estimate/bound/n_eff at the threshold, corrections made, and
    ``why`` a class has no threshold (None when it has one; ``meta``: ``lcm.h5``'s meta, for the settings
    it names)."""
    meta = meta or {}
    fnum = lambda v: None if not np.isfinite(v) else round(float(v), 6)  # noqa: E731
    answers = cal.get("answers", np.zeros(len(names), np.int64))
    eff_ev = cal.get("effective_evidence", cal["evidence"].astype(np.float64))
    out = {}
    for k, name in enumerate(names):
        has = bool(np.isfinite(cal["log_threshold"][k]))
        if not (has or cal["corrected"][k] or answers[k] or cal["evidence"][k]):
            continue
        source = SOURCE_NAMES[int(cal["source"][k])]
        row = {"threshold": fnum(cal["threshold"][k]), "source": source, "pooled": source == "pooled",
               "answers": int(answers[k]), "evidence": int(cal["evidence"][k]),
               "effective_evidence": fnum(eff_ev[k]), "support": int(cal["support"][k]),
               "estimated_precision": fnum(cal["precision"][k]), "precision_bound": fnum(cal["bound"][k]),
               "effective_support": fnum(cal["effective"][k]) if "effective" in cal else None,
               "corrected": int(cal["corrected"][k])}
        row["why"] = None if has else _no_threshold_reason(int(answers[k]), float(eff_ev[k]), meta)
        out[name] = row
    return out


def _no_threshold_reason(answers: int, eff_evidence: float, meta: dict[str, Any]) -> str:
    """Why a class got no threshold (the rules of :func:`calibrate_thresholds`), in the settings' names."""
    min_answers, min_evidence = meta.get("min_class_answers"), meta.get("min_class_evidence")
    target = meta.get("target_precision")
    if meta.get("reason"):
        return "ψ was not trained: " + str(meta["reason"])
    if min_answers is not None and answers < min_answers:
        return f"fewer answers than lcm.min_class_answers = {min_answers}"
    if min_evidence is not None and eff_evidence >= min_evidence:
        return f"its own situations' precision bound never reached lcm.target_precision = {target}"
    return (f"pooled (n_eff of its situations < lcm.min_class_evidence = {min_evidence}): the pooled group's "
            f"precision bound never reached lcm.target_precision = {target}")


def no_correction_reason(meta: dict[str, Any], by_class: dict[str, dict[str, Any]], corrected: int) -> str | None:
    """Why a calibrated round corrected nothing (None when it corrected): ψ not trained (``meta['reason']``),
    no class with a threshold, or no never-queried mask reaching one (with the outside-overlap count)."""
    if corrected:
        return None
    if meta.get("reason"):
        return str(meta["reason"])
    if not any(row["threshold"] is not None for row in by_class.values()):
        return (f"no class had a threshold: no class's (or the pooled group's) precision bound reached "
                f"lcm.target_precision = {meta.get('target_precision')}")
    out = meta.get("outside_overlap")
    return ("no never-queried mask reached its class's threshold"
            + (f" inside the overlap ({out} never-queried situations outside it are never corrected)" if out else ""))


def calibration_report(cal: dict[str, np.ndarray], meta: dict[str, Any], names: list[str], corrected_label: np.ndarray,
                       gt: np.ndarray | None) -> dict[str, Any]:
    """The calibrated selection's part of ``a2lc evaluate --metric lcm-accuracy``: target, estimated
    precision and its bound (weighted by the corrections made), and per class the threshold, estimate,
    bound, corrections and — with ground truth (gt: (K,) GT majority of the corrected masks) — their
    measured accuracy (%, void-majority masks left out). cal: ``lcm.h5``'s calibration arrays
    (:attr:`a2lc_cli.state.Corrections.calibration`)."""
    by_class = calibration_by_class(cal, list(names), meta)
    for name, row in by_class.items():
        row["accuracy_after"] = None
        if gt is not None:
            sel = (corrected_label == names.index(name)) & (gt != 255)
            row["accuracy_after"] = round(100.0 * float(np.mean(corrected_label[sel] == gt[sel])), 4) if sel.any() else None
    return {"target_precision": meta.get("target_precision"), "confidence": meta.get("confidence"),
            "estimated_precision": meta.get("estimated_precision"), "precision_bound": meta.get("precision_bound"),
            "min_class_bound": meta.get("min_class_bound"), "pooled_threshold": meta.get("pooled_threshold"),
            "outside_overlap": meta.get("outside_overlap"), "answers": meta.get("answers"),
            "effective_evidence": meta.get("effective_evidence"),
            "reason": no_correction_reason(meta, by_class, int(cal["corrected"].sum())),
            "by_class": by_class}
