"""The built-in benchmark's version, and whether a dataset file was made by an older one.

Kept apart from :mod:`a2lc_cli.labelers.simulate` (which imports the scene generator and
OpenCV) so that ``a2lc status`` can check a workspace cheaply.
"""

from __future__ import annotations

from typing import Any

# the simulated labeler's version, recorded as ``noise_version`` in dataset.h5's meta; bump it when the
# generator or the noise model changes (docs/benchmark.md)
NOISE_VERSION = 3
LABELER = "simulate"  # SimulatedFoundationModel.name


def outdated_benchmark(meta: dict[str, Any]) -> int | None:
    """The older benchmark version a dataset file was made with, or None.

    meta: ``dataset.h5``'s meta (:attr:`a2lc_cli.state.Dataset.meta`; the simulate labeler records
    ``noise_version``, v1 included). None for a dataset of another labeler or of this version.
    """
    if meta.get("labeler") != LABELER:
        return None
    try:
        version = int(meta.get("noise_version", 1))
    except (TypeError, ValueError):
        version = 1
    return version if version < NOISE_VERSION else None
