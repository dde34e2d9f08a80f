"""Labelers produce the correction units (masks) and round-0 labels of each train image.

Registry: name -> "module:class". Each class takes ``(cfg, source)`` and
implements :class:`a2lc_cli.labelers.base.Labeler`.
"""

from __future__ import annotations

import importlib

from ..config import Config
from ..data.base import Source
from ..errors import A2LCError
from .base import Labeler

LABELERS: dict[str, str] = {
    "simulate": "a2lc_cli.labelers.simulate:SimulatedFoundationModel",
    "import": "a2lc_cli.labelers.imported:ImportLabeler",
    "grounded-sam": "a2lc_cli.labelers.grounded_sam:GroundedSamLabeler",
}


def default_labeler(cfg: Config) -> str:
    """``simulate`` for the built-in benchmark, otherwise what the config names (``import`` by default)."""
    if cfg.pseudolabel.labeler:
        return cfg.pseudolabel.labeler
    return "simulate" if cfg.source.kind == "synthetic" else "import"


def make_labeler(name: str, cfg: Config, source: Source) -> Labeler:
    """Instantiate a labeler by registry name."""
    if name not in LABELERS:
        raise A2LCError(f"unknown labeler {name!r} (choose from {', '.join(LABELERS)})")
    module, _, cls = LABELERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(cfg, source)


__all__ = ["LABELERS", "Labeler", "default_labeler", "make_labeler"]
