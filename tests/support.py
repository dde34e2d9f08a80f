"""Crafted workspaces for method tests: a dataset.h5 written through the real writer,
an in-memory source, and a model whose softmax output is fixed per pixel.

The stages are given the fakes as arguments (:func:`fakes` makes the
:class:`a2lc_cli.stage_inputs.StageInputs`); nothing is monkeypatched. In-process CLI runs get them
from the ``cli`` fixture (tests/conftest.py): a test whose fixtures include ``crafted`` (returning
``(ws, fakes)``) runs every command on those fakes, and ``cli(..., inputs=...)`` overrides it per call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from a2lc_cli.config import Config
from a2lc_cli.data.base import ClassInfo, Source, default_palette
from a2lc_cli.models import IMAGENET_MEAN, IMAGENET_STD
from a2lc_cli.stage_inputs import StageInputs
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
        # a (frozen) parameter, as a real θ has: callers find the model's device from its parameters
        self.logits = nn.Parameter(torch.log(torch.as_tensor(np.stack(probs), dtype=torch.float32)), requires_grad=False)

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


def fakes(source: Source, model: nn.Module) -> StageInputs:
    """Stage inputs that hand out ``source`` instead of the config's data and ``model`` instead of any saved θ
    (``model.pt`` must still exist: :func:`touch_model`)."""
    def load(path, device=None):
        return model.to(device), {"num_classes": int(model.logits.shape[1])}

    return StageInputs(source=lambda cfg: source, model=load)


def crafted_workspace(root: Path, segments: list[np.ndarray], labels0: list[np.ndarray], gts: list[np.ndarray],
                      probs: list[np.ndarray]) -> tuple[Workspace, StageInputs]:
    """A crafted workspace with a θ_0 in place, and the fakes its stages are given: the images of ``gts``
    and a model whose softmax is ``probs`` ((C,H,W) per image; C classes)."""
    ws, source = write_workspace(root, num_classes=int(probs[0].shape[0]), segments=segments, labels0=labels0, gts=gts)
    touch_model(ws, 0)
    return ws, fakes(source, LookupModel(probs))


def touch_model(ws: Workspace, r: int) -> None:
    """A placeholder θ_r file, so the stages find a model of round r (its content is the fake's)."""
    p = ws.artifact(r, "model.pt")
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}}, p)
