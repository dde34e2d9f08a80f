"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import typer

from ..config import Config
from ..errors import A2LCError
from ..stage_inputs import INPUTS_KEY, StageInputs
from ..workspace import Workspace

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")


def workspace(ctx: typer.Context, *, must_exist: bool = True) -> Workspace:
    """The workspace chosen by the global ``--workspace`` option.

    must_exist: refuse a workspace folder that does not exist (a typo in ``-w`` must not
    describe, or create, an empty workspace); only the commands that start one
    (``init``, ``pseudolabel``, ``demo``) pass False.
    """
    obj = ctx.find_root().obj
    assert isinstance(obj, Workspace)
    if must_exist:
        require_workspace(obj.root)
    obj.check_entries()  # only regular files and folders (a FIFO would hang a reader)
    return obj


def stage_inputs(ctx: typer.Context) -> StageInputs | None:
    """What the stages this command runs are given (:func:`a2lc_cli.cli.invoke`'s ``inputs``; None: the real ones).
    Every command that runs a stage passes it on as the stage's ``inputs`` argument."""
    return ctx.find_root().meta.get(INPUTS_KEY)


def choices(name: str, values: Any) -> type[Enum]:
    """A ``str`` Enum of the allowed values of an option (a ``Literal`` of config.py or a sequence), for a Typer
    option with choices: ``--help`` lists them and a wrong value is one line, ``error: unknown --opt 'x'
    (choose from a, b)`` (:func:`a2lc_cli.cli.invoke`). Commands pass :func:`chosen` (the string) on to the library."""
    items = get_args(values) or tuple(values)
    return Enum(name, {str(v): str(v) for v in items}, type=str)  # type: ignore[return-value]


def chosen(choice: Enum | None) -> str | None:
    """The string of a choice option (None stays None)."""
    return None if choice is None else str(choice.value)


WORKSPACE_ENTRIES = ("config.json", "dataset.h5", "rounds")  # what a2lc writes first into a workspace


def require_workspace(root: Path) -> None:
    """Refuse ``-w`` unless it names an a2lc workspace: a folder holding ``config.json``,
    ``dataset.h5`` or ``rounds/``. One line each for a path that does not exist, a file, an
    empty folder (start a workspace there) and a folder of something else, such as a dataset
    root (start the workspace elsewhere): no command but ``init``/``pseudolabel``/``demo``
    describes, or writes into, a folder that is not a workspace.
    """
    where = root.absolute()
    if not root.exists() and not root.is_symlink():
        from ..hints import how_chosen

        raise A2LCError(f"workspace {where} does not exist: {how_chosen()}; or start one there with "
                        f"`a2lc -w {root} init` (or `a2lc -w {root} pseudolabel`)")
    if not root.is_dir() and not root.is_file():
        return  # a FIFO, a device, a broken or looping link: Workspace.check_entries names it
    if root.is_file():
        raise A2LCError(f"{where} is a file, not a workspace folder: -w names the folder of an a2lc workspace "
                        f"(start one with `a2lc -w NEW_DIR init`)")
    if any((root / name).exists() for name in WORKSPACE_ENTRIES):
        return
    inside = _enclosing_workspace(root)
    if inside is not None:  # `-w ws/rounds`, `-w ws/rounds/r001`: a folder of a workspace, not a dataset root
        import shlex

        raise A2LCError(f"{where} is a folder inside the a2lc workspace {inside.absolute()}: "
                        f"-w names the workspace itself (`a2lc -w {shlex.quote(str(inside))} status`)")
    try:
        empty = not any(not e.name.startswith(".") for e in os.scandir(root))
    except OSError as e:
        raise A2LCError(f"cannot read the workspace folder {where}: {e.strerror or e}") from None
    if empty:
        raise A2LCError(f"{where} is an empty folder, not an a2lc workspace yet: start one there with "
                        f"`a2lc -w {root} init` (or `a2lc -w {root} pseudolabel`)")
    raise A2LCError(f"{where} is not an a2lc workspace (it has no config.json, dataset.h5 or rounds/): create one "
                    f"with `a2lc -w NEW_DIR init` (for a dataset in this folder: `a2lc -w NEW_DIR init "
                    f"--source folder|cityscapes|voc --root {root}`)")


def _enclosing_workspace(root: Path) -> Path | None:
    """The nearest folder above ``root`` (up to three levels) that is an a2lc workspace (holds ``config.json``
    or ``dataset.h5``), spelled from the path the user gave when it can be; None when there is none."""
    given = list(root.parents)[:3]  # ws/rounds/r001 -> ws/rounds, ws, . (relative, as the user typed it)
    for k, up in enumerate(root.absolute().parents):
        if k >= 3:
            break
        if any((up / name).is_file() for name in ("config.json", "dataset.h5")):
            return given[k] if k < len(given) and str(given[k]) not in ("", ".") and ".." not in given[k].parts else up
    return None


def round_option(help: str = "Round number (0 = pseudo-labels).", default=None):
    return typer.Option(default, "--r", "--round", "-r", help=help, min=0)


def config_for_write(ws: Workspace) -> Config:
    """The config, written with defaults if the workspace has none yet."""
    return ws.ensure_config()


def require_round(r: int | None, what: str, stage=None) -> int:
    """The one round check of every command's ``--r``: given (``{what} needs a round: --r R``) and, for a
    declared :class:`a2lc_cli.stages.Stage`, one of the rounds its declaration says it runs in
    (:meth:`a2lc_cli.stages.Stage.round_refusal`: ``{what} runs in rounds ≥ 1 (…), not round 0``)."""
    if r is None:
        raise A2LCError(f"{what} needs a round: --r R")
    if stage is not None:
        stage.check_round(r, what=what)
    return r


def stage_round(ctx: typer.Context, r: int | None, stage, *, cfg: Config | None = None) -> tuple[Workspace, Config, int]:
    """The one round check of the stage commands: the workspace, its config and round ``r`` of ``stage``
    (a declared :class:`a2lc_cli.stages.Stage`). ``--r`` is required and must name a round the stage's
    declaration runs it in (:func:`require_round`); what it needs must exist (:func:`a2lc_cli.rounds.check_order`)."""
    from ..rounds import check_order

    ws = workspace(ctx)
    r = require_round(r, stage.name, stage)
    cfg = ws.ensure_config() if cfg is None else cfg
    check_order(ws, cfg, r, stage)
    return ws, cfg, r


def round_artifact(ctx: typer.Context, r: int, stage, *, what: str) -> Workspace:
    """The round check of the commands that only read round ``r``'s artifact of ``stage`` (``evaluate --r``,
    ``export --r``, ``export-answers --r``): a round the stage runs in (:func:`require_round`), and its artifact
    must exist — when it does not, the hint of :func:`a2lc_cli.rounds.check_order` (what to run first) or
    ``round r has no <artifact> yet; run `<command>` first``. Staleness is no refusal: they read what exists."""
    from ..rounds import missing_artifact_hint

    ws = workspace(ctx)
    require_round(r, what, stage)
    if not ws.path(stage, r).exists():
        raise A2LCError(missing_artifact_hint(ws, ws.config(), r, stage))
    return ws

