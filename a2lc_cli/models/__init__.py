"""Segmentation models θ: a registry of variants (data) and one private builder.

Every model maps a normalised image batch (B,3,H,W) to logits (B,C,H,W) at the
input resolution (``forward``), and ``forward_features`` also returns the
decoder features before the classifier, (B,E,h,w), used by the "embedding"
feature option of acquisition and LCM (SPEC §3). Each model has a ``backbone``
submodule (its parameters get the recipe's backbone learning-rate multiplier)
and an ``embed_dim``.

Pretrained weights are only ever read from disk: a local file, or
``"imagenet"`` = torchvision's ImageNet file already in the user's torch cache
(``torch.hub.get_dir()/checkpoints``). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import A2LCError
# the variants are data in a torch-free module (the CLI builds its --model choices from it without torch)
from ..model_variants import MODELS, ModelSpec, model_spec  # noqa: F401

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build(spec: ModelSpec, num_classes: int) -> nn.Module:
    if spec.family == "tiny":
        from .tiny import TinySeg

        return TinySeg(num_classes, **spec.options)
    from .deeplab import DeepLabV3Plus

    return DeepLabV3Plus(num_classes, **spec.options)


def build_model(name: str, num_classes: int, *, pretrained: str | None = None) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes, randomly initialised or with pretrained weights.

    pretrained: None, a local weights file (a backbone or whole-model state dict,
    torchvision or a2lc checkpoint), or "imagenet" (torchvision's file from the torch cache).
    """
    if num_classes < 1:
        raise A2LCError(f"num_classes must be ≥ 1 (got {num_classes})")
    spec = model_spec(name)
    model = _build(spec, num_classes)
    if pretrained:
        load_pretrained(model, name, pretrained)
    return model


def imagenet_path(name: str) -> Path:
    """The torchvision ImageNet weights file of ``name``'s backbone in the torch cache (must exist)."""
    spec = model_spec(name)
    if not spec.imagenet_files:
        raise A2LCError(f"model {name!r} has no ImageNet backbone weights; pass --pretrained PATH or nothing")
    d = Path(torch.hub.get_dir()) / "checkpoints"
    for f in spec.imagenet_files:
        if (d / f).is_file():
            return d / f
    raise A2LCError(
        f"ImageNet weights for {name!r} not found in {d} (expected {' or '.join(spec.imagenet_files)}); "
        "nothing is downloaded: copy the file there or pass --pretrained PATH"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise A2LCError(f"pretrained weights {path} do not exist")
    from ..store import load_torch

    obj = load_torch(path, what="torch weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise A2LCError(f"{path}: does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_pretrained(model: nn.Module, name: str, pretrained: str) -> int:
    """Load weights into ``model`` from a file; returns the number of tensors loaded.

    A whole-model state dict fills every tensor of matching name and shape (a
    classifier for a different class count is skipped); otherwise the file must
    provide every tensor of the backbone (torchvision naming, optional
    ``backbone.`` prefix). Anything else is an A2LCError naming the file.
    """
    path = imagenet_path(name) if pretrained == "imagenet" else Path(pretrained).expanduser()
    sd = _read_state_dict(path)
    need = model.backbone.state_dict()
    whole = model.state_dict()
    fit = {k: v for k, v in sd.items() if k in whole and whole[k].shape == v.shape}
    if all(f"backbone.{k}" in fit for k in need):
        model.load_state_dict(fit, strict=False)
        return len(fit)
    stripped = {k.removeprefix("backbone."): v for k, v in sd.items()}
    fit = {k: v for k, v in stripped.items() if k in need and need[k].shape == v.shape}
    if len(fit) == len(need):
        model.backbone.load_state_dict(fit)
        return len(fit)
    raise A2LCError(f"{path}: weights do not fit model {name!r} ({len(fit)} of {len(need)} backbone tensors match)")


def to_input(images: np.ndarray | torch.Tensor, device: torch.device | str, *, channels_last: bool = False) -> torch.Tensor:
    """(B,H,W,3) uint8 RGB images → (B,3,H,W) float32 normalised with the ImageNet mean/std, on ``device``."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (B,H,W,3) images, got shape {tuple(x.shape)}")
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "ModelSpec", "build_model", "count_parameters", "imagenet_path", "load_pretrained",
           "model_spec", "to_input", "IMAGENET_MEAN", "IMAGENET_STD"]
