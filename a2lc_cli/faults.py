"""Deterministic fault injection for the reliability tests (docs/reliability.md).

The stages call :func:`checkpoint` at their meaningful points: after each image
of ``pseudolabel``, after each batch of ``acquire``, after each iteration of
``train``, after each epoch of ``lcm-train``, between parsing and writing an
answers import, and just before the rename that publishes every artifact
(``rename.<file name>``, e.g. ``rename.query.h5``). Without the environment
variables below a checkpoint does nothing but read ``os.environ`` once.

Environment (each a comma-separated list of ``NAME:N``, N ≥ 1, default 1):

``A2LC_CRASH_AT``  on the N-th time checkpoint NAME is reached, the process
    kills itself with SIGKILL: no cleanup, no ``finally``, no flush, exactly
    like ``kill -9`` or the OOM killer, but at a chosen point instead of a
    chosen time.
``A2LC_STALL_AT``  on the N-th time, the process sleeps (``A2LC_STALL_SECONDS``,
    default 120) holding whatever it holds (the workspace lock), so a test
    can look at a writer caught mid-stage.
``A2LC_TRACE``     a file path: every checkpoint appends ``NAME`` on one line
    (opened with O_APPEND and written before any crash), so a test can count
    the work a run did, e.g. how many images a resumed ``pseudolabel`` labelled.

The names of all checkpoints are in :data:`CHECKPOINTS`.
"""

from __future__ import annotations

import os
import signal
import time

CRASH_ENV = "A2LC_CRASH_AT"
STALL_ENV = "A2LC_STALL_AT"
STALL_SECONDS_ENV = "A2LC_STALL_SECONDS"
TRACE_ENV = "A2LC_TRACE"

CHECKPOINTS = {
    "pseudolabel.image": "an image's correction units were added to .dataset.h5.partial",
    "acquire.batch": "a batch of images was reduced per mask (after the partial checkpoint, if one was due)",
    "train.iteration": "an optimiser step of θ_r finished (after model.ckpt, if one was due)",
    "lcm.epoch": "an epoch of ψ_r finished",
    "query.import": "an answers file was parsed and merged, before query.h5 is rewritten",
    "rename.<file>": "an artifact is complete and fsynced under its temporary name, before the rename",
}

_hits: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, n = item.rpartition(":")
        if not sep or not n.isdigit():
            name, n = item, "1"
        out[name] = max(1, int(n))
    return out


def checkpoint(name: str) -> None:
    """A point where a crash (or a stall) may be injected; counts the hits of ``name`` in this process."""
    crash, stall, trace = os.environ.get(CRASH_ENV), os.environ.get(STALL_ENV), os.environ.get(TRACE_ENV)
    if not (crash or stall or trace):
        return
    n = _hits[name] = _hits.get(name, 0) + 1
    if trace:
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if stall and _parse(stall).get(name) == n:
        time.sleep(float(os.environ.get(STALL_SECONDS_ENV, "120")))
    if crash and _parse(crash).get(name) == n:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover - SIGKILL is delivered before this returns


def reset() -> None:
    """Forget the hit counts (for in-process tests)."""
    _hits.clear()
