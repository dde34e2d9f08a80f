"""Crafted workspaces for method tests: a dataset.h5 written through the real writer,
an in-memory source, and a model whose softmax output is fixed per pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from a2lc_cli.config import Config
from a2lc_cli.data.base import ClassInfo, Source, default_palette
from a2lc_cli.models import IMAGENET_MEAN, IMAGENET_STD
from a2lc_cli.state import DatasetWriter, ImageProposal
from a2lc_cli.workspace import Workspace


class ArraySource(Source):
    """Train images held in memory; image i is filled with the value i (so a LookupModel can tell them apart)."""

    def __init__(self, classes: ClassInfo, gts: list[np.ndarray]):
        self.classes = classes
        self.gts = gts

    def names(self, split: str) -> list[str]:
        return [f"img{i}" for i in range(len(self.gts))] if split == "train" else []

    def image(self, split: str, index: int) -> np.ndarray:
        h, w = self.gts[index].shape
        return np.full((h, w, 3), index, np.uint8)

    def label(self, split: str, index: int) -> np.ndarray:
        return self.gts[index]


class LookupModel(nn.Module):
    """Returns fixed logits per image: log of the given (C,H,W) probability maps."""

    def __init__(self, probs: list[np.ndarray]):
        super().__init__()
        self.register_buffer("logits", torch.log(torch.as_tensor(np.stack(probs), dtype=torch.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # images are filled with their index; undo the ImageNet normalisation of channel 0
        idx = torch.round((x[:, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255).long()
        return self.logits[idx]


def write_workspace(
    root: Path,
    *,
    num_classes: int,
    segments: list[np.ndarray],
    labels0: list[np.ndarray],
    gts: list[np.ndarray],
    fill_label: int = 255,
) -> tuple[Workspace, ArraySource]:
    """A workspace whose dataset.h5 holds the given per-image local segment maps and labels."""
    classes = ClassInfo(tuple(f"c{k}" for k in range(num_classes)), default_palette(num_classes), fill_label)
    source = ArraySource(classes, gts)
    ws = Workspace(root)
    ws.save_config(Config())
    w = DatasetWriter(
        ws.dataset_path, classes=classes, names=source.names("train"), paths=[""] * len(gts),
        sizes=[g.shape for g in gts], has_gt=True, meta={"test": True},
    )
    for i, (seg, lab, gt) in enumerate(zip(segments, labels0, gts)):
        w.add_image(i, ImageProposal(segment=np.asarray(seg, np.int32), label0=np.asarray(lab, np.uint8)), gt)
    w.finish()
    return ws, source


def install_fakes(monkeypatch, source: Source, model: nn.Module) -> None:
    """Make the stages use ``source`` and ``model`` instead of the config's data and a trained θ."""
    import a2lc_cli.acquire as acquire_mod
    import a2lc_cli.data as data_mod
    import a2lc_cli.training as training_mod

    monkeypatch.setattr(acquire_mod, "open_source", lambda cfg: source)
    monkeypatch.setattr(data_mod, "open_source", lambda cfg: source)
    monkeypatch.setattr(training_mod, "load_model", lambda path, device: (model.to(device), {"num_classes": model.logits.shape[1]}))


def touch_model(ws: Workspace, r: int) -> None:
    """A placeholder θ_r file, so the stages find a model of round r (its content is the fake's)."""
    p = ws.artifact(r, "model.pt")
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}}, p)
