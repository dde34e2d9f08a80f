"""What a stage is given instead of opening it: the images and the trained models.

A stage's run function takes ``inputs: StageInputs | None`` (None: the real ones) and asks it for what
comes from outside the round's own arrays — the config's image :class:`~a2lc_cli.data.base.Source`
(train images for ``acquire``, ``train``, the bundle of ``query --export`` and ``--serve``; the
validation split for Model mIoU), θ (``model.pt``, for ``acquire`` and Model mIoU) and ψ (``lcm.pt``,
for ``lcm-correct``). The workspace's own artifacts (``dataset.h5``, ``query.h5`` …) are read through
``ws``: tests write them with the real writers (``tests/support.write_workspace``).

The drivers pass one ``StageInputs`` to every stage they run: ``a2lc round``/``a2lc run``
(:func:`a2lc_cli.rounds.run_round`), the stage commands and ``a2lc evaluate``, each given it by
:func:`a2lc_cli.cli.invoke` (``invoke(argv, inputs=...)``; the console script passes none). So a test
runs whole rounds on an in-memory source and a model with fixed outputs by passing them as arguments::

    fakes = StageInputs(source=lambda cfg: ArraySource(...), model=lambda path, device: (LookupModel(...), {...}))
    run_round(ws, cfg, 1, inputs=fakes)          # or: invoke(["-w", ws.root, "round", "--r", "1"], inputs=fakes)

A field left None opens the real thing, so ``dataclasses.replace(fakes, model=None)`` keeps the fake
images and loads the real θ a round has just trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at import: `a2lc status` loads no torch
    from .config import Config
    from .data.base import Source


@dataclass(frozen=True)
class StageInputs:
    """Openers of a stage's outside inputs; a field left None opens the real one.

    source: ``cfg -> Source`` (default :func:`a2lc_cli.data.open_source`: the config's dataset).
    model: ``(path, device) -> (nn.Module, info)`` loading θ from ``model.pt`` (default
    :func:`a2lc_cli.training.load_model`; ``info`` holds at least ``num_classes``).
    lcm: ``path -> (LCMNet, checkpoint dict)`` loading ψ from ``lcm.pt`` (default
    :func:`a2lc_cli.lcm_stage.load_lcm`).
    Errors are those of the opener (A2LCError naming the file or the dataset root for the real ones).
    """

    source: Callable[[Config], Source] | None = None
    model: Callable[[Path, Any], tuple[Any, dict]] | None = None
    lcm: Callable[[Path], tuple[Any, dict]] | None = None

    def open_source(self, cfg: Config) -> Source:
        """The image source of ``cfg`` (train and validation splits)."""
        if self.source is not None:
            return self.source(cfg)
        from .data import open_source

        return open_source(cfg)

    def load_model(self, path: Path, device: Any = None) -> tuple[Any, dict]:
        """θ saved at ``path``, on ``device``, in eval mode, and its info dict."""
        if self.model is not None:
            return self.model(path, device)
        from .training import load_model

        return load_model(path, device)

    def load_lcm(self, path: Path) -> tuple[Any, dict]:
        """ψ saved at ``path`` (eval mode) and its checkpoint dict."""
        if self.lcm is not None:
            return self.lcm(path)
        from .lcm_stage import load_lcm

        return load_lcm(path)


INPUTS_KEY = "a2lc.inputs"  # where the CLI keeps invoke's ``inputs`` (click's ``ctx.meta``)
REAL = StageInputs()  # every input opened from the config and the workspace's files


def given(inputs: StageInputs | None) -> StageInputs:
    """``inputs``, or :data:`REAL` for None (the default of every stage's ``inputs`` argument)."""
    return REAL if inputs is None else inputs
