"""Data sources: the built-in synthetic benchmark and the real dataset layouts.

Sources are data in a registry: name -> module path and class; :func:`open_source`
builds the one the workspace config names.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..config import Config
from ..errors import A2LCError
from .base import VOID, ClassInfo, Source

SOURCES: dict[str, str] = {
    "synthetic": "a2lc_cli.data.synthetic:SyntheticSource",
    "cityscapes": "a2lc_cli.data.cityscapes:CityscapesSource",
    "voc": "a2lc_cli.data.voc:VOCSource",
    "folder": "a2lc_cli.data.folder:FolderSource",
}


def open_source(cfg: Config) -> Source:
    """Build the data source described by ``cfg.source`` (validating its files)."""
    kind = cfg.source.kind
    if kind != "synthetic":
        if not cfg.source.root:
            raise A2LCError(f"source {kind!r} needs a dataset root: a2lc init --source {kind} --root PATH")
        root = Path(cfg.source.root).expanduser()
        if not root.is_dir():
            raise A2LCError(f"dataset root {root} does not exist or is not a directory")
    module, _, cls = SOURCES[kind].partition(":")
    return getattr(importlib.import_module(module), cls).from_config(cfg)


__all__ = ["VOID", "ClassInfo", "Source", "SOURCES", "open_source"]
