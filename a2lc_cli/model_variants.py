"""The registry of segmentation model variants (data only, no torch): ``a2lc train --model`` lists these
names as its choices and :mod:`a2lc_cli.models` builds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import A2LCError


@dataclass(frozen=True)
class ModelSpec:
    """A model variant.

    family: "tiny" | "deeplab" (which builder class and which training recipe applies).
    options: keyword arguments of the family's class.
    imagenet_files: file names of torchvision's ImageNet backbone weights (any one will do).
    """

    family: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    imagenet_files: tuple[str, ...] = ()


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        "tiny", "dilated CNN (~40k parameters) for the built-in data on CPUs",
        {"stem": 12, "width": 32, "dilations": (1, 2, 4), "down": 2},
    ),
    "deeplabv3plus_r50": ModelSpec(
        "deeplab", "DeepLabV3+ ResNet-50, output stride 16",
        {"encoder": "resnet", "arch": "resnet50"},
        ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    ),
    "deeplabv3plus_r101": ModelSpec(
        "deeplab", "DeepLabV3+ ResNet-101, output stride 16 (the paper's model)",
        {"encoder": "resnet", "arch": "resnet101"},
        ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"),
    ),
    "mobilenet": ModelSpec(
        "deeplab", "DeepLabV3+ MobileNetV3-Large, output stride 16",
        {"encoder": "mobilenet", "arch": "mobilenet_v3_large"},
        ("mobilenet_v3_large-8738ca79.pth",),
    ),
}


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; an unknown name is an A2LCError listing the known ones."""
    if name not in MODELS:
        raise A2LCError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    return MODELS[name]
