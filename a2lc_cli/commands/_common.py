"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import typer

from ..config import Config
from ..errors import A2LCError
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
    if must_exist and not obj.root.is_dir():
        raise A2LCError(f"workspace {obj.root.absolute()} does not exist: check -w, or start one there with "
                        f"`a2lc init` or `a2lc pseudolabel` (with -w {obj.root})")
    obj.check_entries()  # only regular files and folders (a FIFO would hang a reader)
    return obj


def round_option(help: str = "Round number (0 = pseudo-labels).", default=None):
    return typer.Option(default, "--r", "--round", "-r", help=help, min=0)


def config_for_write(ws: Workspace) -> Config:
    """The config, written with defaults if the workspace has none yet."""
    return ws.ensure_config()


def require_round(r: int | None, what: str) -> int:
    if r is None:
        raise A2LCError(f"{what} needs a round: --r R")
    return r
