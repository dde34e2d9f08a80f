"""The ``a2lc`` command line: one Typer app, one module per group of subcommands.

Commands are thin: they parse options, call the library, and print. Errors in
the user's input are :class:`A2LCError` and print as one line (no traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.text import Text

from . import __version__, ui
from .errors import A2LCError, os_error
from .workspace import DEFAULT_WORKSPACE, Workspace

try:  # typer ≥ 0.20 ships its own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException, UsageError
_Exit = tuple({typer.Exit, getattr(__import__("typer").exceptions, "Exit", typer.Exit)})
_Abort = tuple({typer.Abort, getattr(__import__("typer").exceptions, "Abort", typer.Abort)})

app = typer.Typer(
    name="a2lc",
    help="Active and automated label correction for semantic segmentation (A²LC).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"a2lc {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    workspace: Path = typer.Option(
        Path(DEFAULT_WORKSPACE), "--workspace", "-w", envvar="A2LC_WORKSPACE",
        help="Workspace directory holding the config and all artifacts.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or informational messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ui.set_quiet(quiet)
    ctx.obj = Workspace(workspace)


def _register() -> None:
    from .commands import COMMAND_MODULES
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"a2lc_cli.commands.{name}").register(app)


_register()


_GLOBAL_WITH_VALUE = ("--workspace", "-w")
_GLOBAL_FLAGS = ("--quiet", "-q")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move the global options to the front, so ``a2lc status -w DIR`` works like ``a2lc -w DIR status``."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i:]
            break
        if a in _GLOBAL_WITH_VALUE and i + 1 < len(argv):
            front += [a, argv[i + 1]]
            i += 2
            continue
        if a.startswith("--workspace=") or a in _GLOBAL_FLAGS:
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def invoke(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (errors printed as one line)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = app(args=argv, prog_name="a2lc", standalone_mode=False)
    except A2LCError as e:
        ui.err.print(Text("error: ", style="bold red") + Text(str(e)), soft_wrap=True)
        return e.exit_code
    except _Exit as e:
        return e.exit_code
    except UsageError as e:
        msg = e.format_message().replace("\n", " ")
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        ui.err.print(Text("error: ", style="bold red") + Text(msg + hint), soft_wrap=True)
        return 2
    except ClickException as e:
        ui.err.print(Text("error: ", style="bold red") + Text(e.format_message().replace("\n", " ")), soft_wrap=True)
        return e.exit_code
    except OSError as e:  # a disk error no writer turned into a message (full, read-only, permissions)
        ui.err.print(Text("error: ", style="bold red") + Text(str(os_error(e))), soft_wrap=True)
        return 2
    except (*_Abort, KeyboardInterrupt):
        ui.err.print("interrupted")
        return 130
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(invoke())
