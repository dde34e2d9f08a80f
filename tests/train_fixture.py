"""A tiny learnable dataset for the training tests, in the real ``folder`` source format.

Images are 8×8 tiles of three classes with distinct colours (plus noise), so a
small CNN separates them in a few dozen iterations. ``dataset.h5`` is written
with :class:`a2lc_cli.state.DatasetWriter`: one mask per tile, round-0 labels =
ground truth (or given noisy labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from a2lc_cli.config import Config, parse_config
from a2lc_cli.data import open_source
from a2lc_cli.state import DatasetWriter, ImageProposal
from a2lc_cli.workspace import Workspace

COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.int16)
TILE = 8


def write_tile_dataset(root: Path, *, n_train: int = 12, n_val: int = 6, h: int = 32, w: int = 48,
                       seed: int = 0, train: dict | None = None) -> tuple[Workspace, Config]:
    """Write ``root/data`` (folder layout) and a workspace ``root/ws`` with config and dataset.h5.

    Every image has a 2×2 void corner in its ground truth. ``train`` may hold extra
    ``cfg.train`` fields.
    """
    root = Path(root)
    data = root / "data"
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (data / "images" / split).mkdir(parents=True, exist_ok=True)
        (data / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            tiles = rng.integers(0, 3, size=(h // TILE, w // TILE)).astype(np.uint8)
            lab = np.kron(tiles, np.ones((TILE, TILE), np.uint8))
            lab[:2, :2] = 255
            noise = rng.integers(-30, 31, size=(h, w, 3))
            img = np.clip(COLOURS[np.minimum(lab, 2)] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(data / "images" / split / f"im{i:03d}.png")
            Image.fromarray(lab).save(data / "labels" / split / f"im{i:03d}.png")
    (data / "classes.txt").write_text("red\ngreen\nblue\n")
    ws = Workspace(root / "ws")
    cfg = parse_config({"source": {"kind": "folder", "root": str(data)}, "train": train or {}})
    ws.save_config(cfg)
    src = open_source(cfg)
    names = src.names("train")
    writer = DatasetWriter(ws.dataset_path, classes=src.classes, names=names, paths=[""] * len(names),
                           sizes=[src.size("train", i) for i in range(len(names))], has_gt=True, meta={})
    seg = ((np.arange(h)[:, None] // TILE) * (w // TILE) + np.arange(w)[None, :] // TILE).astype(np.int32)
    for i in range(len(names)):
        gt = src.label("train", i)
        writer.add_image(i, ImageProposal(segment=seg, label0=gt.copy()), gt)
    writer.finish()
    return ws, cfg
