"""Subcommand modules, one file per command (``config`` show/set is one group); each has ``register(app)``.

The stage commands come from the stage registry: a declared stage ``name`` is the command in
``commands/<name with _ for ->.py`` (``lcm-train`` → ``lcm_train.py``), listed in the registry's
round order; adding a stage adds its command file and nothing here. Order here is the order in ``--help``.
"""

from __future__ import annotations

BEFORE_STAGES = ["init", "status", "config"]
AFTER_STAGES = [
    "answers",  # export-answers
    "evaluate",
    "round",
    "run",
    "demo",
    "export",
    "report",
]


def stage_command_modules() -> list[str]:
    """The command module of every declared stage, in the registry's round order."""
    from ..stages import STAGES

    return [s.name.replace("-", "_") for s in STAGES]


def command_modules() -> list[str]:
    """Every command module, in ``--help`` order: workspace commands, the stages', then the rest."""
    return [*BEFORE_STAGES, *stage_command_modules(), *AFTER_STAGES]
