"""Round 0: run a labeler over the train images and write ``dataset.h5``.

Images are streamed one at a time; the writer keeps a partial file so an
interrupted run continues from the last finished image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import ui
from .config import Config
from .data import open_source
from .labelers import default_labeler, make_labeler
from .state import DatasetWriter


@dataclass
class PseudolabelSummary:
    labeler: str
    images: int
    masks: int
    resumed_from: int


def run_pseudolabel(
    path: Path, cfg: Config, *, labeler: str | None = None, resume: bool = True, flush_every: int = 16
) -> PseudolabelSummary:
    """Label every train image with ``labeler`` and write the dataset file at ``path``."""
    source = open_source(cfg)
    name = labeler or default_labeler(cfg)
    lab = make_labeler(name, cfg, source)
    lab.check()
    names = source.names("train")
    has_gt = source.has_gt("train")
    sizes = [source.size("train", i) for i in ui.progress(range(len(names)), "reading image sizes")]
    meta = {"source": cfg.source.model_dump(mode="json"), "seed": cfg.seed, **lab.meta()}
    writer = DatasetWriter(
        path,
        classes=source.classes,
        names=names,
        paths=[source.image_path("train", i) for i in range(len(names))],
        sizes=sizes,
        has_gt=has_gt,
        meta=meta,
        resume=resume,
    )
    start = writer.images_done
    if start:
        ui.info(f"resuming pseudolabel at image {start} of {len(names)}")
    try:
        with ui.ProgressBar(f"pseudolabel ({name})", total=len(names) - start) as bar:
            for i in range(start, len(names)):
                image = source.image("train", i)
                gt = source.label("train", i) if has_gt else None
                writer.add_image(i, lab.propose(i, image, gt), gt)
                if (i + 1) % flush_every == 0:
                    writer.checkpoint()
                bar.advance()
        n_masks = writer.n_masks
        writer.finish()
    finally:
        writer.close()
    return PseudolabelSummary(labeler=name, images=len(names), masks=n_masks, resumed_from=start)
