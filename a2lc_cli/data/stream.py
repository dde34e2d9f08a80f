"""Streaming the train set image by image: image, segment map and current labels.

Used by the per-image stages (acquisition, and anything else that needs the
pixels of a round): memory stays bounded by one batch whatever the dataset size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Source


@dataclass
class TrainBatch:
    """Consecutive train images of one size.

    indices: image indices.  images: (B,H,W,3) uint8 RGB.
    segment: (B,H,W) int32 global mask ids (-1 = no mask).  labels: (B,H,W) uint8 current labels.
    """

    indices: list[int]
    images: np.ndarray
    segment: np.ndarray
    labels: np.ndarray


class _Items:
    """Map-style reader of (index, image, segment, labels); opens dataset.h5 lazily per process."""

    def __init__(self, ds_path: Path, read_image, state, indices: list[int]):
        self.ds_path = Path(ds_path)
        self.read_image = read_image
        self.state = state
        self.indices = indices
        self._ds = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        from ..state import Dataset, paint_labels

        if self._ds is None:
            self._ds = Dataset(self.ds_path)
        i = self.indices[j]
        image = self.read_image(i)
        return i, image, self._ds.segment(i), paint_labels(self._ds, i, self.state)


def iter_train_batches(
    ds_path: Path, source: Source, state, *, batch_size: int, start: int = 0, stop: int | None = None,
    workers: int = 0,
) -> Iterator[TrainBatch]:
    """Yield the train images [start, stop) in order, grouped into same-size batches.

    state: the MaskState whose labels are painted (the labels of the previous round).
    workers > 0 reads images in background processes (torch DataLoader).
    """
    from ..fingerprint import TrainImages
    from ..state import Dataset

    with Dataset(ds_path) as ds:
        stop = ds.n_images if stop is None else stop
        read_image = TrainImages.of(source, ds)  # the images are checked against dataset.h5 as they are read
    items = _Items(ds_path, read_image, state, list(range(start, stop)))
    if workers > 0:
        import torch.utils.data as tud

        it = iter(tud.DataLoader(items, batch_size=None, num_workers=workers, collate_fn=lambda x: x,
                                 prefetch_factor=4, persistent_workers=False))
    else:
        it = (items[j] for j in range(len(items)))
    pending: list = []
    for item in it:
        if pending and (len(pending) == batch_size or item[1].shape != pending[0][1].shape):
            yield _stack(pending)
            pending = []
        pending.append(item)
    if pending:
        yield _stack(pending)


def _stack(items: list) -> TrainBatch:
    return TrainBatch(
        indices=[int(i) for i, *_ in items],
        images=np.stack([x[1] for x in items]),
        segment=np.stack([x[2] for x in items]),
        labels=np.stack([x[3] for x in items]),
    )
