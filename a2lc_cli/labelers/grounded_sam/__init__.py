"""Grounded SAM pseudo-labels (the paper's round 0): GroundingDINO boxes from class prompts, SAM masks.

``a2lc pseudolabel --labeler grounded-sam --sam-checkpoint sam_vit_h_4b8939.pth
--gdino-checkpoint groundingdino_swint_ogc.pth --text-encoder bert-base-uncased/``.
Modules: :mod:`.models` (building/loading checkpoints), :mod:`.prompts` (caption,
token → class), :mod:`.engine` (batched inference). See docs/grounded-sam.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import Config
from ...data.base import Source
from ...errors import A2LCError
from ...state import ImageProposal
from ..base import Labeler
from .engine import GroundedSamEngine, gdino_input_size
from .models import (
    check_text_encoder, find_cached_bert, fingerprint, load_gdino, load_sam, resolve_gdino_config, resolve_sam_spec,
)
from .prompts import PromptSet, build_prompts, token_classes

CITYSCAPES_SIZE = (512, 1024)  # GroundingDINO short/max side on Cityscapes (the authors' setting)
DEFAULT_SIZE = (800, 1333)  # GroundingDINO's own default


def resolve_device(name: str) -> torch.device:
    """``auto``: ``cuda:$LOCAL_RANK`` when CUDA exists (one GPU per torchrun rank), else ``cpu``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise A2LCError(f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise A2LCError(f"--device {name}: CUDA is not available on this machine")
    return dev


class GroundedSamLabeler(Labeler):
    """Labeler ``grounded-sam``: masks and round-0 labels from GroundingDINO + SAM (user-supplied weights)."""

    name = "grounded-sam"

    def __init__(self, cfg: Config, source: Source):
        self.cfg = cfg
        self.opts = cfg.pseudolabel.grounded_sam
        self.source = source
        self.classes = source.classes
        self.batch_size = self.opts.batch_size
        self._engine: GroundedSamEngine | None = None
        self._files: dict[str, Path] | None = None
        self._prompts: PromptSet | None = None

    # ---- validation ------------------------------------------------------
    def _resolve_files(self) -> dict[str, Path]:
        """Check that every file exists (no model built yet)."""
        o = self.opts
        if not o.sam_checkpoint:
            raise A2LCError("grounded-sam needs --sam-checkpoint PATH (e.g. sam_vit_h_4b8939.pth; see docs/grounded-sam.md)")
        if not o.gdino_checkpoint:
            raise A2LCError("grounded-sam needs --gdino-checkpoint PATH (e.g. groundingdino_swint_ogc.pth; see docs/grounded-sam.md)")
        files = {"sam": Path(o.sam_checkpoint).expanduser(), "gdino": Path(o.gdino_checkpoint).expanduser()}
        for key, what in (("sam", "SAM"), ("gdino", "GroundingDINO")):
            if not files[key].is_file():
                raise A2LCError(f"{what} checkpoint {files[key]} does not exist")
        resolve_sam_spec(o.sam_type)
        files["gdino_config"] = resolve_gdino_config(o.gdino_config)
        if o.text_encoder:
            files["text_encoder"] = check_text_encoder(Path(o.text_encoder))
        else:
            cached = find_cached_bert()
            if cached is None:
                raise A2LCError(
                    "grounded-sam needs --text-encoder PATH: a local bert-base-uncased folder (config.json, vocab.txt); "
                    "nothing is downloaded (see docs/grounded-sam.md)"
                )
            files["text_encoder"] = cached
        return files

    def input_size(self) -> tuple[int, int | None]:
        """GroundingDINO's (short side, max side): the config's, else by dataset."""
        cityscapes = self.cfg.source.kind == "cityscapes" or self.classes.convention == "cityscapes"
        short, longest = CITYSCAPES_SIZE if cityscapes else DEFAULT_SIZE
        return (self.opts.short_side or short, self.opts.max_side or longest)

    def prompts(self) -> PromptSet:
        if self._prompts is None:
            o = self.opts
            self._prompts = build_prompts(self.classes, prompts=o.prompts, thresholds=o.thresholds, box_threshold=o.box_threshold)
        return self._prompts

    def check(self) -> None:
        """Validate files, prompts and checkpoints (building both models) before any image is processed."""
        if self._engine is not None:
            return
        prompts = self.prompts()
        files = self._resolve_files()
        device = resolve_device(self.opts.device)
        precision = self.opts.precision
        bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
        sam = load_sam(files["sam"], self.opts.sam_type)
        gdino = load_gdino(files["gdino"], str(files["gdino_config"]), files["text_encoder"])
        tokens = token_classes(prompts, gdino.tokenizer, max_text_len=int(gdino.max_text_len))
        short, longest = self.input_size()
        self._files = files
        self._engine = GroundedSamEngine(
            gdino, sam, prompts=prompts, token_class=tokens, fill_label=self.classes.fill_label, device=device,
            bf16=bf16, short_side=short, max_side=longest, nms_iou=self.opts.nms_iou, max_boxes=self.opts.max_boxes,
        )

    def meta(self) -> dict[str, Any]:
        """Everything that determines the output (files by fingerprint, prompts, thresholds, sizes).

        Device, precision and batch size are left out: a run interrupted on one GPU
        may be resumed on another.
        """
        files = self._files or self._resolve_files()
        p = self.prompts()
        short, longest = self.input_size()
        return {
            "labeler": self.name,
            "sam": {**fingerprint(files["sam"]), "type": self.opts.sam_type},
            "gdino": {**fingerprint(files["gdino"]), "config": str(files["gdino_config"])},
            "text_encoder": str(Path(files["text_encoder"]).resolve()),
            "caption": p.caption,
            "phrase_class": list(p.phrase_class),
            "thresholds": [None if np.isnan(t) else round(float(t), 6) for t in p.thresholds],
            "short_side": short,
            "max_side": longest,
            "nms_iou": self.opts.nms_iou,
            "max_boxes": self.opts.max_boxes,
        }

    # ---- labelling -------------------------------------------------------
    def propose_batch(self, indices: list[int], images: list[np.ndarray]) -> list[ImageProposal]:
        """Proposals of several train images at once (images: (H,W,3) uint8 RGB each)."""
        self.check()
        assert self._engine is not None
        return self._engine.propose(images)

    def propose(self, index: int, image: np.ndarray, gt: np.ndarray | None) -> ImageProposal:
        """One image's masks; ``gt`` is not looked at."""
        return self.propose_batch([index], [image])[0]


__all__ = ["GroundedSamLabeler", "GroundedSamEngine", "gdino_input_size", "resolve_device"]
