"""CPU threads per stage: which torch thread count each stage runs with on the CPU.

Measured on 2-core machines (docs/performance.md, ``bench/stage_threads.py``): the
default benchmark's stages are small enough that a second OpenMP thread gains little
when the cores are free and loses several-fold when they are shared, because OpenMP
barriers wait for descheduled threads. So the stages whose work is small run with one
thread: ``lcm-train`` and ``lcm-correct`` (a small MLP) always, and ``acquire`` and
``evaluate`` (Model mIoU) when the model's recipe says so (the tiny model: 1; the
DeepLab models: torch's default), like ``train`` does (``train.threads``).

Order of precedence: the config (``threads.<stage>``; ``train.threads`` for
training) > ``OMP_NUM_THREADS`` > the stage's default. On CUDA nothing is changed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

# stage → default CPU threads; None: the model recipe's threads (acquire, evaluate)
STAGE_DEFAULTS: dict[str, int | None] = {"acquire": None, "lcm-train": 1, "lcm-correct": 1, "evaluate": None}


def stage_thread_count(stage: str, cfg: Any = None, *, model_threads: int | None = None,
                       device_type: str = "cpu") -> int | None:
    """Threads for ``stage`` (None: leave torch's setting alone).

    cfg: the workspace Config (its ``threads`` section), or None.
    model_threads: the ``threads`` of the recipe the model was trained with (acquire, evaluate).
    """
    if device_type != "cpu":
        return None
    section = getattr(cfg, "threads", None)
    configured = getattr(section, stage.replace("-", "_"), None) if section is not None else None
    if configured:
        return int(configured)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    default = STAGE_DEFAULTS.get(stage)
    return default if default is not None else model_threads


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` torch CPU threads (None: unchanged), restoring the previous count."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def stage_threads(stage: str, cfg: Any = None, *, model_threads: int | None = None,
                  device_type: str = "cpu") -> Iterator[None]:
    """The body runs with :func:`stage_thread_count` threads."""
    with cpu_threads(stage_thread_count(stage, cfg, model_threads=model_threads, device_type=device_type)):
        yield
