"""The ``acquire`` stage: one streaming pass of θ_{r-1} over the train set → ``acquire.h5``.

For each batch of images the model's softmax is reduced per mask on the model's
device (:func:`a2lc_cli.acquisition.reduce_batch`); only per-mask statistics
leave the batch. At the end the adaptive class weights are computed from the
class counts of the whole set and every mask gets its score. The per-mask mean
feature (Eq. 1) is stored for the label correction module.

An interrupted pass resumes from its last checkpoint (``.acquire.h5.partial``).
Under ``torchrun`` each rank scores whole batches of a contiguous slice of the
images into its own resumable shard and rank 0 merges them (docs/training.md).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import faults, ui
from .acquisition import ACQUISITIONS, MaskStats, compute_scores, reduce_batch
from .config import Config, resolve_method
from .data.stream import iter_train_batches
from .errors import A2LCError
from .stage_inputs import StageInputs, given
from .store import open_progress
from .threads import stage_threads
from .round_state import mask_state
from .state import (  # noqa: F401 - acquire.h5's schema lives in state.py; names kept here
    Acquisition, Dataset, check_acquisition_fits, mask_features, read_acquisition, read_array,
    write_acquisition, write_artifact,
)
from .workspace import Workspace

PARTIAL_FIELDS = ("area", "dominant", "mean_prob", "sim_by_class", "cil", "entropy", "margin", "rep_pixel", "counts")


def pick_device(device: str | None) -> torch.device:
    """``cuda`` when available unless a device is named; under torchrun, the rank's GPU (LOCAL_RANK)."""
    import os

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise A2LCError(f"--device {device}: CUDA is not available on this machine")
        dev = torch.device(device)
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


CPU_BATCH_PIXELS = 2**21  # ≈ one 1024×2048 image: logits + probabilities of a batch ≈ 2 × 160 MB


def default_batch_size(dev: torch.device, max_pixels: int) -> int:
    """Images per forward pass when none is given: 4, on the CPU at most ``CPU_BATCH_PIXELS`` pixels.

    On the CPU the forward pass's activations and the (B,C,H,W) logits and
    probabilities dominate the pass's memory; at 1024×2048 four images need ≈ 4 GB,
    one ≈ 1 GB (docs/performance.md). Per-mask results do not depend on the batch.
    """
    if dev.type == "cuda":
        return 4
    return max(1, min(4, CPU_BATCH_PIXELS // max(1, max_pixels)))


def release_free_memory() -> None:
    """Hand the C heap's free memory back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    The forward pass and the reduction allocate and free arrays of 1–100 MB per
    image; glibc keeps freed heap memory below its top in the process, so on the
    CPU the resident memory of the pass crept up by 60–130 MB per 1024×2048 image.
    Called after every batch (≈ 1 ms), it lowers the pass's peak by ≈ 35 MB at the
    median of 9 runs (docs/performance.md).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        _MALLOC_TRIM = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _MALLOC_TRIM = libc.malloc_trim
            _MALLOC_TRIM.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, musl without it, Windows)
            pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def softmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis of (B,C,H,W) logits, as float32, on the layout that is fast for it.

    Contiguous (NCHW) logits: softmax over dim 1 directly. Channels-last logits (the
    CUDA models): softmax over the last, contiguous axis of the (B,H,W,C) view, returned
    as a (B,C,H,W) view of the same memory. On the CPU at 1024×2048 the softmax over
    dim 1 of channels-last memory takes 3.9× as long as either (docs/performance.md).
    """
    x = logits.float()
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.softmax(x, 1)
    return torch.softmax(x.permute(0, 2, 3, 1), -1).permute(0, 3, 1, 2)


def acquire_inputs(ws: Workspace, r: int, recorded: dict | None = None) -> dict[str, str]:
    """The uids of what round ``r``'s acquisition is computed from (for staleness checks): the
    declared inputs of the ``acquire`` stage (:mod:`a2lc_cli.stages`): dataset, θ_{r-1}, earlier rounds' query and lcm.

    ``recorded``: the inputs an existing ``acquire.h5`` recorded, to compare with (an older
    a2lc's size-and-time identity of ``model.pt`` is kept while it still holds, see
    :func:`a2lc_cli.state.artifact_uid`).
    """
    from .stages import ACQUIRE, current_inputs

    return current_inputs(ws, ACQUIRE, r, recorded)


def run_acquire(
    ws: Workspace,
    cfg: Config,
    r: int,
    *,
    fn: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    workers: int = 0,
    checkpoint_seconds: float = 120.0,
    checkpoint_images: int | None = None,
    model: torch.nn.Module | None = None,
    source: Any = None,
    inputs: StageInputs | None = None,
) -> dict[str, Any]:
    """Score every mask of the train set with θ_{r-1}; write ``rounds/rNNN/acquire.h5``.

    model: θ_{r-1}, already built; source: the train images. By default both come from ``inputs``
    (:class:`a2lc_cli.stage_inputs.StageInputs`; None: round r-1's ``model.pt`` and the config's
    source). Tests pass fakes here, as arguments.

    batch_size: images per forward pass; None = :func:`default_batch_size` (4, fewer for
    large images on the CPU so the pass's memory stays bounded).
    The pass saves ``.acquire.h5.partial`` every ``checkpoint_seconds`` (and every
    ``checkpoint_images`` images when given); a rerun with the same inputs resumes there.
    """
    from .stages import ACQUIRE

    ACQUIRE.check_round(r)  # the one wording (commands refuse it first, _common.stage_round)
    fn = fn or str(resolve_method(cfg.method)["acquisition"])
    if fn not in ACQUISITIONS:
        raise A2LCError(f"unknown acquisition function {fn!r} (choose from {', '.join(ACQUISITIONS)})")
    model_path = ws.path("train", r - 1)
    if model is None and not model_path.exists():
        raise A2LCError(f"round {r} needs θ_{r - 1}: {model_path} does not exist; run `a2lc train --r {r - 1}`")
    from .models import to_input

    inputs = given(inputs)
    dev = pick_device(device)
    out_path = ws.path("acquire", r)
    partial_path = out_path.with_name(".acquire.h5.partial")
    embedding = cfg.method.feature == "embedding"
    t0 = time.perf_counter()
    threads = contextlib.ExitStack()
    with threads, Dataset(ws.dataset_path) as ds:
        state = mask_state(ws, ds, r - 1)
        done = [k for k, s in state.rounds_applied if s == "query"]
        if done != list(range(1, r)):
            missing = next(k for k in range(1, r) if k not in done)
            raise A2LCError(f"round {missing} has no query yet; run `a2lc query --r {missing}` first")
        if batch_size is None:
            batch_size = default_batch_size(dev, int((ds.heights.astype(np.int64) * ds.widths).max(initial=1)))
        model, info = inputs.load_model(model_path, dev) if model is None else (model.to(dev), {})
        threads.enter_context(stage_threads("acquire", cfg, model_threads=(info.get("recipe") or {}).get("threads"),
                                            device_type=dev.type))
        if int(info.get("num_classes", ds.num_classes)) != ds.num_classes:
            raise A2LCError(f"{model_path} predicts {info.get('num_classes')} classes but the dataset has {ds.num_classes}")
        model.eval()
        source = inputs.open_source(cfg) if source is None else source
        uids = acquire_inputs(ws, r)  # what acquire.h5 records it was computed from
        meta = {"fn": fn, "feature": cfg.method.feature, "round": r, "kl_uniform": cfg.method.kl_uniform}
        stats = MaskStats(ds.n_masks, ds.num_classes)
        counted_all = torch.as_tensor(~state.queried, device=dev)
        use_bf16 = dev.type == "cuda"

        def score_images(lo: int, hi: int, partial: Path, meta_p: dict, title: str) -> None:
            """Fill ``stats`` for images [lo, hi), resuming from and checkpointing to ``partial``."""
            start = max(lo, _load_partial(partial, stats, uids, meta_p))
            if start > lo:
                ui.info(f"resuming acquisition at image {start} of {ds.n_images}")
            last_ckpt, last_ckpt_image = time.monotonic(), start
            with ui.ProgressBar(title, total=hi - start) as bar:
                for batch in iter_train_batches(ds.path, source, state, batch_size=batch_size, start=start, stop=hi,
                                                workers=workers):
                    i0, i1 = batch.indices[0], batch.indices[-1] + 1
                    m0, m1 = int(ds.mask_offset[i0]), int(ds.mask_offset[i1])
                    x = to_input(batch.images, dev, channels_last=dev.type == "cuda")
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                        if embedding:
                            logits, emb = model.forward_features(x)
                        else:
                            logits, emb = model(x), None
                    b, c, h, w = logits.shape
                    seg = torch.as_tensor(batch.segment, device=dev).long()
                    seg = torch.where(seg >= 0, seg - m0, seg)
                    labels = torch.as_tensor(batch.labels, device=dev).long()
                    # softmax block by block inside the reduction, over the logits in place (one (B,C,H,W) array)
                    bs = reduce_batch(
                        logits, seg, labels, m1 - m0, counted=counted_all[m0:m1], embedding=emb,
                        need_entropy=fn == "entropy", need_margin=fn == "margin", logits=True,
                    )
                    del logits, emb, x, seg, labels  # free before the next forward: its activations set the peak
                    if dev.type == "cpu":
                        release_free_memory()
                    # flat offset of each mask's image inside the batch, to store image-relative pixels
                    img_of_mask = ds.mask_image[m0:m1] - i0
                    stats.put(m0, bs, img_of_mask.astype(np.int64) * (h * w))
                    bar.advance(len(batch.indices))
                    due = time.monotonic() - last_ckpt > checkpoint_seconds or (
                        checkpoint_images is not None and i1 - last_ckpt_image >= checkpoint_images)
                    if due and i1 < hi:
                        _save_partial(partial, stats, i1, uids, meta_p)
                        last_ckpt, last_ckpt_image = time.monotonic(), i1
                    faults.checkpoint("acquire.batch")

        rank, world = _dist_env()
        if world == 1:
            score_images(0, ds.n_images, partial_path, meta, f"acquire r{r} ({fn})")
        else:
            _score_sharded(ws, ds, stats, score_images, out_path, uids, meta, rank, world, batch_size)
            if rank > 0:
                return {"round": r, "fn": fn, "rank": rank, "ranks": world, "device": str(dev)}
        scores, extra = compute_scores(fn, stats, queried=state.queried, seed=cfg.seed * 1009 + r,
                                       kl_uniform=cfg.method.kl_uniform)
        seconds = time.perf_counter() - t0
        meta.update({"seconds": round(seconds, 3), "device": str(dev), "batch_size": batch_size})
        write_acquisition(out_path, Acquisition(
            score=scores, mean_prob=stats.mean_prob, embedding=stats.embedding, dominant=stats.dominant,
            rep_pixel=stats.rep_pixel, area=stats.area, queried_before=state.queried, label_counts=stats.counts,
            class_weight=extra.get("class_weight"), rarity=extra.get("rarity"), kl=extra.get("kl"),
        ), inputs=uids, meta=meta)
        if partial_path.exists():
            partial_path.unlink()
        if world > 1:
            _finish_sharded(out_path)
        eligible = np.isfinite(scores)
        return {
            "round": r, "fn": fn, "masks": int(ds.n_masks), "eligible": int(eligible.sum()),
            "seconds": round(seconds, 2), "device": str(dev),
            "kl": float(extra["kl"]) if "kl" in extra else None,
            "path": str(out_path), "ranks": world,
        }


# --------------------------------------------------------------------------- torchrun: one shard of images per rank
def _dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    import os

    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise A2LCError("RANK / WORLD_SIZE are not integers") from None


def batch_starts(heights: np.ndarray, widths: np.ndarray, batch_size: int) -> list[int]:
    """First image of every batch of the one-process stream (:func:`iter_train_batches` from image 0).

    A batch ends after ``batch_size`` images or where the image size changes.
    """
    starts: list[int] = []
    prev, count = None, 0
    for i, hw in enumerate(zip(heights.tolist(), widths.tolist())):
        if prev is None or count == batch_size or hw != prev:
            starts.append(i)
            prev, count = hw, 0
        count += 1
    return starts


def shard_images(starts: list[int], n_images: int, rank: int, world: int) -> tuple[int, int]:
    """Images [lo, hi) of ``rank``: a contiguous run of whole batches of the one-process stream.

    Whole batches, so every image goes through the model in the same batch as in one
    process and the statistics are bitwise the same.
    """
    nb = len(starts)
    b_lo, b_hi = rank * nb // world, (rank + 1) * nb // world
    return (starts[b_lo] if b_lo < nb else n_images), (starts[b_hi] if b_hi < nb else n_images)


def _shard_path(out_path: Path, rank: int, world: int) -> Path:
    return out_path.parent / ".acquire-shards" / f"acquire.{rank}-of-{world}.h5"


def _score_sharded(ws, ds, stats: MaskStats, score_images, out_path: Path, inputs: dict, meta: dict,
                   rank: int, world: int, batch_size: int) -> None:
    """Under torchrun: score this rank's shard (resumable), then rank 0 gathers every shard into ``stats``.

    Ranks coordinate over a gloo process group (CPU barriers only, whatever the device).
    """
    import datetime as _dt

    import torch.distributed as dist

    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", timeout=_dt.timedelta(hours=24))
    try:
        starts = batch_starts(ds.heights, ds.widths, batch_size)
        lo, hi = shard_images(starts, ds.n_images, rank, world)
        shard = _shard_path(out_path, rank, world)
        shard_meta = {**meta, "shard": [rank, world, lo, hi], "batch_size": batch_size}
        m_lo, m_hi = int(ds.mask_offset[lo]), int(ds.mask_offset[hi])
        if not _finished_shard(shard, inputs, shard_meta):
            shard.parent.mkdir(parents=True, exist_ok=True)
            partial = shard.with_name(f".{shard.name}.partial")
            score_images(lo, hi, partial, shard_meta, f"acquire r{meta['round']} ({meta['fn']}) rank {rank}/{world}")
            _save_shard(shard, stats, m_lo, m_hi, inputs, shard_meta)
            if partial.exists():
                partial.unlink()
        dist.barrier()  # every shard is written
        if rank == 0:
            stats.counts[:] = 0  # the shards' counts, rank 0's own included, are summed afresh
            for k in range(world):
                k_lo, k_hi = shard_images(starts, ds.n_images, k, world)
                _load_shard(_shard_path(out_path, k, world), stats, int(ds.mask_offset[k_lo]), int(ds.mask_offset[k_hi]))
    finally:
        if owns_group:
            dist.destroy_process_group()


def _finish_sharded(out_path: Path) -> None:
    """(rank 0) acquire.h5 is in place: remove the shards."""
    import shutil

    shutil.rmtree(out_path.parent / ".acquire-shards", ignore_errors=True)


def _finished_shard(path: Path, inputs: dict, meta: dict) -> bool:
    """A shard written by an earlier run with the same inputs and options (then it is not recomputed)."""
    import json

    if not path.exists():
        return False
    try:
        with open_progress(path) as f:
            return json.loads(f.attrs["inputs"]) == inputs and json.loads(f.attrs["meta"]) == meta
    except (OSError, KeyError, ValueError):
        return False


def _save_shard(path: Path, stats: MaskStats, m_lo: int, m_hi: int, inputs: dict, meta: dict) -> None:
    """The statistics of masks [m_lo, m_hi) and the shard's class counts."""
    with write_artifact(path, "acquire-shard", inputs=inputs, meta=meta) as f:
        for name in PARTIAL_FIELDS:
            arr = getattr(stats, name)
            f.create_dataset(name, data=arr if name == "counts" else arr[m_lo:m_hi])
        if stats.embedding is not None:
            f.create_dataset("embedding", data=stats.embedding[m_lo:m_hi])


def _load_shard(path: Path, stats: MaskStats, m_lo: int, m_hi: int) -> None:
    """Add a shard's statistics into ``stats`` (masks [m_lo, m_hi); class counts summed)."""
    with open_progress(path) as f:
        for name in PARTIAL_FIELDS:
            arr = read_array(f, name, path=path)
            if name == "counts":
                stats.counts += arr
            else:
                getattr(stats, name)[m_lo:m_hi] = arr
        if "embedding" in f:
            emb = read_array(f, "embedding", path=path)
            if stats.embedding is None:
                stats.embedding = np.zeros((stats.n_masks, emb.shape[1]), np.float32)
            stats.embedding[m_lo:m_hi] = emb


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
        with open_progress(path) as f:
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
