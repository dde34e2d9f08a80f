"""Round 0: run a labeler over the train images and write ``dataset.h5``.

Images are streamed in batches (the next batch is read in a background thread
while the labeler works); the writer keeps a partial file so an interrupted run
continues from the last finished image.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank labels a contiguous slice of the
images into its own shard file (itself resumable); rank 0 then merges the shards,
in image order, into one ``dataset.h5`` identical in format to a single-process
run. Ranks coordinate over a gloo process group (CPU only, whatever the device).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import faults, ui
from .config import Config
from .data.base import Source
from .fingerprint import image_signature
from .sanity import dataset_warnings
from .labelers import Labeler, default_labeler, make_labeler
from .stage_inputs import StageInputs, given
from .store import open_progress
from .state import Dataset, DatasetWriter, ImageProposal


@dataclass
class PseudolabelSummary:
    labeler: str
    images: int
    masks: int
    resumed_from: int
    ranks: int = 1
    warnings: list[str] = field(default_factory=list)


def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment variables; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice [lo, hi) of ``n`` images that ``rank`` of ``world`` labels."""
    return rank * n // world, (rank + 1) * n // world


def run_stage(ws, cfg: Config, r: int = 0, *, inputs: StageInputs | None = None) -> PseudolabelSummary:
    """The ``pseudolabel`` stage as ``a2lc round --r 0`` runs it (:mod:`a2lc_cli.stages`)."""
    return run_pseudolabel(ws.dataset_path, cfg, inputs=inputs)


def run_pseudolabel(
    path: Path, cfg: Config, *, labeler: str | None = None, resume: bool = True, flush_every: int = 16,
    inputs: StageInputs | None = None,
) -> PseudolabelSummary:
    """Label every train image with ``labeler`` and write the dataset file at ``path``.

    Under torchrun every rank calls this; only rank 0 writes ``path`` (the other
    ranks return a summary of their own shard). inputs: where the train images come from
    (:class:`a2lc_cli.stage_inputs.StageInputs`; None: the config's source).
    """
    rank, world = dist_env()
    source = given(inputs).open_source(cfg)
    name = labeler or default_labeler(cfg)
    lab = make_labeler(name, cfg, source)
    lab.check()
    names = source.names("train")
    has_gt = source.has_gt("train")
    sizes = [source.size("train", i) for i in ui.progress(range(len(names)), "reading image sizes")]
    paths = [source.image_path("train", i) for i in range(len(names))]
    meta = {"source": cfg.source.model_dump(mode="json"), "seed": cfg.seed, **lab.meta()}
    common = dict(classes=source.classes, has_gt=has_gt)
    if world == 1:
        writer = DatasetWriter(path, names=names, paths=paths, sizes=sizes, meta=meta, resume=resume, **common)
        start = writer.images_done
        if start:
            ui.info(f"resuming pseudolabel at image {start} of {len(names)}")
        try:
            _label_into(writer, lab, source, offset=0, has_gt=has_gt, title=f"pseudolabel ({name})", flush_every=flush_every)
            n_masks = writer.n_masks
            writer.finish()
        finally:
            writer.close()
        return PseudolabelSummary(labeler=name, images=len(names), masks=n_masks, resumed_from=start,
                                  warnings=_warnings(writer, source, name))

    import torch.distributed as dist

    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", timeout=_dt.timedelta(hours=24))
    try:
        lo, hi = shard_range(len(names), rank, world)
        shard = shard_path(path, rank, world)
        shard_meta = {**meta, "shard": [rank, world, lo, hi]}
        start = 0
        if not _finished_shard(shard, shard_meta, hi - lo):
            writer = DatasetWriter(shard, names=names[lo:hi], paths=paths[lo:hi], sizes=sizes[lo:hi],
                                   meta=shard_meta, resume=resume, **common)
            start = writer.images_done
            try:
                _label_into(writer, lab, source, offset=lo, has_gt=has_gt,
                            title=f"pseudolabel ({name}) rank {rank}/{world}", flush_every=flush_every)
                writer.finish()
            finally:
                writer.close()
        dist.barrier()  # every shard is finished
        n_masks, warnings = 0, []
        if rank == 0:
            shards = [(shard_path(path, r, world), *shard_range(len(names), r, world)) for r in range(world)]
            n_masks = merge_shards(path, shards, names=names, paths=paths, sizes=sizes, meta=meta, resume=resume, **common)
            with Dataset(path) as ds:
                values = {k: ds.f[f"stats/{k}_values"][()] for k in ("label0", "gt") if f"stats/{k}_values" in ds.f}
            warnings = dataset_warnings(source.classes, n_images=len(names), n_masks=n_masks, labeler=name,
                                        label0_values=values["label0"], gt_values=values.get("gt"))
        dist.barrier()  # the merged file is in place
    finally:
        if owns_group:
            dist.destroy_process_group()
    return PseudolabelSummary(labeler=name, images=len(names), masks=n_masks, resumed_from=lo + start, ranks=world,
                              warnings=warnings)


def _warnings(writer: DatasetWriter, source: Source, labeler: str) -> list[str]:
    """The likely mistakes in what was just written (:func:`a2lc_cli.sanity.dataset_warnings`)."""
    return dataset_warnings(source.classes, n_images=writer.n, n_masks=writer.n_masks, labeler=labeler,
                            label0_values=writer.values["label0"],
                            gt_values=writer.values["gt"] if writer.has_gt else None)


def _label_into(
    writer: DatasetWriter, lab: Labeler, source: Source, *, offset: int, has_gt: bool, title: str, flush_every: int
) -> None:
    """Label images ``offset + writer.images_done ..`` until the writer is full, in batches.

    A labeler with ``propose_batch(indices, images)`` and ``batch_size`` > 1 gets
    whole batches; others get one image at a time through ``propose``.
    """
    n, start = writer.n, writer.images_done
    bs = max(1, int(getattr(lab, "batch_size", 1)))
    batch_fn = getattr(lab, "propose_batch", None)
    chunks = [range(s, min(s + bs, n)) for s in range(start, n, bs)]

    def load(js: range) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        return [(offset + j, source.image("train", offset + j), source.label("train", offset + j) if has_gt else None)
                for j in js]

    since_flush = 0
    with ThreadPoolExecutor(1, thread_name_prefix="a2lc-read") as pool, ui.ProgressBar(title, total=n - start) as bar:
        pending = pool.submit(load, chunks[0]) if chunks else None
        for c, js in enumerate(chunks):
            assert pending is not None
            items = pending.result()
            pending = pool.submit(load, chunks[c + 1]) if c + 1 < len(chunks) else None
            if batch_fn is not None and len(items) > 1:
                props = batch_fn([i for i, _, _ in items], [im for _, im, _ in items])
            else:
                props = [lab.propose(i, im, gt) for i, im, gt in items]
            for j, (_, im, gt), p in zip(js, items, props):
                writer.add_image(j, p, gt, signature=image_signature(im))
                faults.checkpoint("pseudolabel.image")
            since_flush += len(js)
            if since_flush >= flush_every:
                writer.checkpoint()
                since_flush = 0
            bar.advance(len(js))


def shard_path(path: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` writes its shard of ``path``: a hidden folder beside it."""
    path = Path(path)
    return path.parent / f".{path.stem}-shards" / f"{path.stem}.{rank}-of-{world}{path.suffix}"


def _finished_shard(path: Path, meta: dict[str, Any], n: int) -> bool:
    """A finished shard of an earlier run with the same options (then it is not relabelled)."""
    if not path.exists():
        return False
    try:
        with open_progress(path) as f:
            return (f.attrs.get("meta") == json.dumps(meta, sort_keys=True, default=str)
                    and int(f.attrs.get("images_done", -1)) == n)
    except OSError:
        return False


def merge_shards(
    path: Path,
    shards: list[tuple[Path, int, int]],
    *,
    classes,
    names: list[str],
    paths: list[str],
    sizes: list[tuple[int, int]],
    has_gt: bool,
    meta: dict[str, Any],
    resume: bool = True,
) -> int:
    """Concatenate finished shard files [(shard, lo, hi)] in image order into ``path``; returns the mask count.

    Each image's masks are re-added through :class:`DatasetWriter` (local ids,
    labels, scores, prompts and ground truth as the shard stored them), so the
    merged file is exactly what one process would have written. The merge itself
    resumes, and the shards are removed once the merged file is in place.
    """
    writer = DatasetWriter(path, classes=classes, names=names, paths=paths, sizes=sizes, has_gt=has_gt,
                           meta=meta, resume=resume)
    try:
        with ui.ProgressBar("merging shards", total=len(names) - writer.images_done) as bar:
            for shard, lo, hi in shards:
                if writer.images_done >= hi:
                    continue
                with Dataset(shard) as ds:
                    score, prompt = ds.mask_column("score"), ds.mask_column("prompt")
                    sigs = ds.image_signatures()
                    for j in range(writer.images_done - lo, hi - lo):
                        sl = ds.masks_of(j)
                        seg = ds.segment(j)
                        local = np.where(seg >= 0, seg - sl.start, -1).astype(np.int32)
                        prop = ImageProposal(local, ds.label0(j), score=score[sl], prompt=prompt[sl])
                        sig = None if sigs is None or not sigs[1][j] else sigs[0][j]
                        writer.add_image(lo + j, prop, ds.gt(j) if has_gt else None, signature=sig)
                        bar.advance()
        n_masks = writer.n_masks
        writer.finish()
    finally:
        writer.close()
    if shards:
        shutil.rmtree(shards[0][0].parent, ignore_errors=True)
    return n_masks
