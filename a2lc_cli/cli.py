"""The ``a2lc`` command line: one Typer app, one module per group of subcommands.

Commands are thin: they parse options, call the library, and print. Errors in
the user's input are :class:`A2LCError` and print as one line (no traceback).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.text import Text

from . import __version__, ui
from .config import validation_message
from .errors import A2LCError, os_error, shorten_numbers
from .stage_inputs import INPUTS_KEY, StageInputs
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
    from . import hints

    ui.set_quiet(quiet)
    source = getattr(ctx.get_parameter_source("workspace"), "name", "")  # typer's own click or click's enum
    hints.set_workspace(workspace, {"COMMANDLINE": "-w", "ENVIRONMENT": "A2LC_WORKSPACE"}.get(source, "default"))  # suggested commands name this workspace (hints.localise)
    ctx.meta[INPUTS_KEY] = ctx.obj  # invoke's ``inputs`` (None: the real ones), for the stages (_common.stage_inputs)
    ctx.obj = Workspace(workspace)


def _register() -> None:
    from .commands import command_modules
    import importlib

    for name in command_modules():  # the stage registry's stages, in round order, among the others
        importlib.import_module(f"a2lc_cli.commands.{name}").register(app)


_register()


def _no_type_for_flags() -> None:
    """``--help`` shows no value type (``<bool>``) for plain flags such as ``--json`` or ``--force``."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - another typer layout: keep its display
        return
    show = getattr(TyperOption, "display_type_rich", None)
    if show is None or getattr(show, "_a2lc", False):
        return

    def display_type_rich(self, ctx):  # noqa: ANN001 - typer's signature
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return show(self, ctx)

    display_type_rich._a2lc = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


_no_type_for_flags()


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


def _wants_json(argv: list[str]) -> bool:
    """``--json`` among the options (not after ``--``)."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def _fail(message: str, code: int, *, as_json: bool, tail: str = "") -> int:
    """Report an error: one line on stderr; under ``--json`` also ``{"error": message}`` on stdout."""
    from .hints import localise

    message = localise(shorten_numbers(message))  # a value echoed back by click/Typer too (A2LCError does this itself);
    # the commands it suggests name this run's workspace, so they work when copied (not ``tail``: `a2lc X --help`)
    message += tail
    ui.err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    if as_json:
        ui.print_json({"error": message})
    return code


_NOT_A_CHOICE = re.compile(r"Invalid value for '([^']+)'(?: / '[^']+')*: (?:Value error, )?'(.*)' is not one of (.*?)\.?$")


def _choice_message(msg: str) -> str:
    """A wrong value of an option with choices (a Typer Enum) in a2lc's words:
    ``unknown --unit 'x' (choose from mask, pixel)``."""
    m = _NOT_A_CHOICE.match(msg)
    if not m:
        return msg
    return f"unknown {m[1]} {m[2]!r} (choose from {m[3].replace(chr(39), '')})"


def invoke(argv: list[str] | None = None, *, inputs: StageInputs | None = None) -> int:
    """Run the CLI and return its exit code (errors printed as one line; with ``--json`` also as one
    JSON object ``{"error": ...}`` on stdout, with the same exit code).

    inputs: what the stages the command runs are given instead of opening it (the image source, θ, ψ:
    :class:`a2lc_cli.stage_inputs.StageInputs`); None opens the real ones. Tests pass fakes here.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    as_json = _wants_json(argv)
    from . import hints

    hints.reset()  # until the global options are parsed: no workspace of an earlier in-process call
    previous = _sigterm_as_ctrl_c()
    try:
        return _invoke(argv, as_json, inputs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_ctrl_c():
    """SIGTERM (``kill``, ``timeout``, a scheduler or service manager) does what Ctrl-C does in every command:
    KeyboardInterrupt in the main thread, so the command prints ``interrupted``, releases the workspace lock
    (context managers unwind), writes nothing half-done (temp file + rename) and exits with status 130 — the
    same status as Ctrl-C, so scripts have one code for "stopped from outside". Returns the previous
    handler (None where signals cannot be handled: not the main thread, or a handler someone else set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return None  # an embedding program's own handler stays

    def stop(*_) -> None:
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, stop)


def _invoke(argv: list[str], as_json: bool, inputs: StageInputs | None = None) -> int:
    try:
        rv = app(args=argv, prog_name="a2lc", standalone_mode=False, obj=inputs)  # _main moves it to ctx.meta
    except A2LCError as e:
        return _fail(str(e), e.exit_code, as_json=as_json)
    except _Exit as e:
        return e.exit_code
    except UsageError as e:
        msg = _choice_message(e.format_message().replace("\n", " "))
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        return _fail(msg, 2, as_json=as_json, tail=hint)
    except ClickException as e:
        return _fail(e.format_message().replace("\n", " "), e.exit_code, as_json=as_json)
    except ValidationError as e:  # a config value set in code from an option (config.set_option is the usual path)
        return _fail(validation_message(e, "config"), 2, as_json=as_json)
    except OSError as e:  # a disk error no writer turned into a message (full, read-only, permissions)
        return _fail(str(os_error(e)), 2, as_json=as_json)
    except (*_Abort, KeyboardInterrupt):
        return _interrupted(as_json=as_json)
    if rv == 130:  # typer turns Ctrl-C (and SIGTERM, see _sigterm_as_ctrl_c) inside a command into exit status 130
        return _interrupted(as_json=as_json)
    return rv if isinstance(rv, int) else 0


def _interrupted(*, as_json: bool) -> int:
    """Ctrl-C: ``interrupted`` on stderr (under ``--json`` also ``{"error": "interrupted"}``), exit status 130."""
    if as_json:
        ui.print_json({"error": "interrupted"})
    ui.err.print("interrupted")
    return 130


def main() -> None:
    """Console-script entry point."""
    sys.exit(invoke())
