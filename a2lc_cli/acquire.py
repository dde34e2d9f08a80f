"""The ``acquire`` stage: one streaming pass of θ_{r-1} over the train set → ``acquire.h5``.

For each batch of images the model's softmax is reduced per mask on the model's
device (:func:`a2lc_cli.acquisition.reduce_batch`); only per-mask statistics
leave the batch. At the end the adaptive class weights are computed from the
class counts of the whole set and every mask gets its score. The per-mask mean
feature (Eq. 1) is stored for the label correction module.

An interrupted pass resumes from its last checkpoint (``.acquire.h5.partial``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from . import faults, ui
from .acquisition import ACQUISITIONS, MaskStats, compute_scores, reduce_batch
from .config import Config, resolve_method
from .data import open_source
from .data.stream import iter_train_batches
from .errors import A2LCError
from .state import Dataset, artifact_uid, mask_state, read_array, write_artifact
from .workspace import Workspace

PARTIAL_FIELDS = ("area", "dominant", "mean_prob", "sim_by_class", "cil", "entropy", "margin", "rep_pixel", "counts")


def pick_device(device: str | None) -> torch.device:
    """``cuda`` when available unless a device is named."""
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise A2LCError(f"--device {device}: CUDA is not available on this machine")
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def acquire_inputs(ws: Workspace, r: int) -> dict[str, str]:
    """The uids of what round ``r``'s acquisition is computed from (for staleness checks)."""
    inputs = {"dataset": artifact_uid(ws.dataset_path) or "", "model": artifact_uid(ws.artifact(r - 1, "model.pt")) or ""}
    for k in range(1, r):
        for name in ("query.h5", "lcm.h5"):
            uid = artifact_uid(ws.artifact(k, name))
            if uid:
                inputs[f"r{k}/{name}"] = uid
    return inputs


def run_acquire(
    ws: Workspace,
    cfg: Config,
    r: int,
    *,
    fn: str | None = None,
    device: str | None = None,
    batch_size: int = 4,
    workers: int = 0,
    checkpoint_seconds: float = 120.0,
    checkpoint_images: int | None = None,
) -> dict[str, Any]:
    """Score every mask of the train set with θ_{r-1}; write ``rounds/rNNN/acquire.h5``.

    The pass saves ``.acquire.h5.partial`` every ``checkpoint_seconds`` (and every
    ``checkpoint_images`` images when given); a rerun with the same inputs resumes there.
    """
    if r < 1:
        raise A2LCError("acquire runs in rounds ≥ 1 (round 0 is `a2lc pseudolabel` + `a2lc train --r 0`)")
    fn = fn or str(resolve_method(cfg.method)["acquisition"])
    if fn not in ACQUISITIONS:
        raise A2LCError(f"unknown acquisition function {fn!r} (choose from {', '.join(ACQUISITIONS)})")
    model_path = ws.artifact(r - 1, "model.pt")
    if not model_path.exists():
        raise A2LCError(f"round {r} needs θ_{r - 1}: {model_path} does not exist; run `a2lc train --r {r - 1}`")
    from .models import to_input
    from .training import load_model

    dev = pick_device(device)
    out_path = ws.artifact(r, "acquire.h5")
    partial_path = out_path.with_name(".acquire.h5.partial")
    embedding = cfg.method.feature == "embedding"
    t0 = time.perf_counter()
    with Dataset(ws.dataset_path) as ds:
        state = mask_state(ws.root, ds, r - 1)
        done = [k for k, s in state.rounds_applied if s == "query"]
        if done != list(range(1, r)):
            missing = next(k for k in range(1, r) if k not in done)
            raise A2LCError(f"round {missing} has no query yet; run `a2lc query --r {missing}` first")
        model, info = load_model(model_path, dev)
        if int(info.get("num_classes", ds.num_classes)) != ds.num_classes:
            raise A2LCError(f"{model_path} predicts {info.get('num_classes')} classes but the dataset has {ds.num_classes}")
        model.eval()
        source = open_source(cfg)
        inputs = acquire_inputs(ws, r)
        meta = {"fn": fn, "feature": cfg.method.feature, "round": r}
        stats = MaskStats(ds.n_masks, ds.num_classes)
        start = _load_partial(partial_path, stats, inputs, meta)
        if start:
            ui.info(f"resuming acquisition at image {start} of {ds.n_images}")
        counted_all = torch.as_tensor(~state.queried, device=dev)
        last_ckpt, last_ckpt_image = time.monotonic(), start
        use_bf16 = dev.type == "cuda"
        with ui.ProgressBar(f"acquire r{r} ({fn})", total=ds.n_images - start) as bar:
            for batch in iter_train_batches(ds.path, source, state, batch_size=batch_size, start=start, workers=workers):
                i0, i1 = batch.indices[0], batch.indices[-1] + 1
                m0, m1 = int(ds.mask_offset[i0]), int(ds.mask_offset[i1])
                x = to_input(batch.images, dev, channels_last=dev.type == "cuda")
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    if embedding:
                        logits, emb = model.forward_features(x)
                    else:
                        logits, emb = model(x), None
                b, c, h, w = logits.shape
                probs = torch.softmax(logits.float(), 1).permute(0, 2, 3, 1).reshape(-1, c)
                pix_emb = None
                if emb is not None:
                    emb = torch.nn.functional.interpolate(emb.float(), size=(h, w), mode="bilinear", align_corners=False)
                    pix_emb = emb.permute(0, 2, 3, 1).reshape(b * h * w, -1)
                seg = torch.as_tensor(batch.segment, device=dev).reshape(-1).long()
                seg = torch.where(seg >= 0, seg - m0, seg)
                labels = torch.as_tensor(batch.labels, device=dev).reshape(-1).long()
                bs = reduce_batch(
                    probs, seg, labels, m1 - m0, counted=counted_all[m0:m1], embedding=pix_emb,
                    need_entropy=fn == "entropy", need_margin=fn == "margin",
                )
                # flat offset of each mask's image inside the batch, to store image-relative pixels
                img_of_mask = ds.mask_image[m0:m1] - i0
                stats.put(m0, bs, img_of_mask.astype(np.int64) * (h * w))
                bar.advance(len(batch.indices))
                due = time.monotonic() - last_ckpt > checkpoint_seconds or (
                    checkpoint_images is not None and i1 - last_ckpt_image >= checkpoint_images)
                if due and i1 < ds.n_images:
                    _save_partial(partial_path, stats, i1, inputs, meta)
                    last_ckpt, last_ckpt_image = time.monotonic(), i1
                faults.checkpoint("acquire.batch")
        scores, extra = compute_scores(fn, stats, queried=state.queried, seed=cfg.seed * 1009 + r)
        seconds = time.perf_counter() - t0
        meta.update({"seconds": round(seconds, 3), "device": str(dev), "batch_size": batch_size})
        with write_artifact(out_path, "acquire", inputs=inputs, meta=meta) as f:
            f.create_dataset("score", data=scores)
            f.create_dataset("mean_prob", data=stats.mean_prob, compression="gzip", compression_opts=1)
            if stats.embedding is not None:
                f.create_dataset("embedding", data=stats.embedding, compression="gzip", compression_opts=1)
            f.create_dataset("dominant", data=stats.dominant)
            f.create_dataset("rep_pixel", data=stats.rep_pixel)
            f.create_dataset("area", data=stats.area)
            f.create_dataset("queried_before", data=state.queried)
            f.create_dataset("label_counts", data=stats.counts)
            if "class_weight" in extra:
                f.create_dataset("class_weight", data=np.asarray(extra["class_weight"]))
                f.create_dataset("rarity", data=np.asarray(extra["rarity"]))
                f.attrs["kl"] = float(extra["kl"])
        if partial_path.exists():
            partial_path.unlink()
        eligible = np.isfinite(scores)
        return {
            "round": r, "fn": fn, "masks": int(ds.n_masks), "eligible": int(eligible.sum()),
            "seconds": round(seconds, 2), "device": str(dev),
            "kl": float(extra["kl"]) if "kl" in extra else None,
            "path": str(out_path),
        }


def _save_partial(path: Path, stats: MaskStats, images_done: int, inputs: dict, meta: dict) -> None:
    with write_artifact(path, "acquire-partial", inputs=inputs, meta=meta) as f:
        f.attrs["images_done"] = images_done
        for name in PARTIAL_FIELDS:
            f.create_dataset(name, data=getattr(stats, name))
        if stats.embedding is not None:
            f.create_dataset("embedding", data=stats.embedding)


def _load_partial(path: Path, stats: MaskStats, inputs: dict, meta: dict) -> int:
    """Restore a checkpoint of the same pass (same inputs and options); returns images done."""
    if not path.exists():
        return 0
    import json

    try:
        with h5py.File(path, "r") as f:
            if json.loads(f.attrs["inputs"]) != inputs or json.loads(f.attrs["meta"]) != meta:
                return 0
            for name in PARTIAL_FIELDS:
                arr = read_array(f, name)
                if arr.shape != getattr(stats, name).shape:
                    return 0
                setattr(stats, name, arr)
            if "embedding" in f:
                stats.embedding = read_array(f, "embedding")
            return int(f.attrs["images_done"])
    except (OSError, KeyError, ValueError, A2LCError):
        return 0


def read_acquisition(path: Path) -> dict[str, Any]:
    """The arrays of ``acquire.h5`` (score, mean_prob, dominant, rep_pixel, ...) and its attributes."""
    from .state import artifact_attrs, open_artifact

    with open_artifact(path, "acquire", hint="a2lc acquire") as f:
        out: dict[str, Any] = {name: read_array(f, name, path=path) for name in f.keys()}
        out["attrs"] = artifact_attrs(f)
    return out


def check_acquisition_fits(acq: dict[str, Any], ds: Any, path: Path) -> None:
    """An acquisition of this dataset: one row per mask, one probability column per class (A2LCError)."""
    m, c = len(acq["score"]), acq["mean_prob"].shape[1]
    if m != ds.n_masks or c != ds.num_classes:
        raise A2LCError(f"{path} has {m} masks × {c} classes but the dataset has {ds.n_masks} × {ds.num_classes} "
                        "(from another dataset?); rerun acquire")


def mask_features(acq: dict[str, Any]) -> np.ndarray:
    """(M,F) LCM input feature per mask (Eq. 1): the mean embedding if present, else the mean softmax."""
    return acq["embedding"] if "embedding" in acq else acq["mean_prob"]
