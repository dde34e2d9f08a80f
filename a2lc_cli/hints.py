"""Suggested commands that work when copied: ``a2lc …`` hints name the workspace of this run.

Every ``next:`` line, the ``next`` of ``status --json`` and every error or message that names a
command goes through :func:`localise` at the output boundary (:func:`a2lc_cli.cli.invoke`'s error
printing, ``status``, ``init``, ``train``, :func:`a2lc_cli.ui.info`), so the messages built deep in the
library need not know the workspace. A hint gets ``-w <path>`` (shell-quoted, as the user gave it) when
the workspace is not the one a bare ``a2lc`` would find: ``$A2LC_WORKSPACE`` when set, else
``./a2lc-work``.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

_flag: str | None = None  # "-w PATH" for this run's hints, None when a bare `a2lc` finds the workspace
_chosen_by = "default"  # how this run's workspace was chosen: "-w", "A2LC_WORKSPACE" or "default"

# the commands of a2lc (cli.py registers them; a test checks the list is complete), so that prose such as
# "which a2lc never overwrites" stays as it is
COMMANDS = ("acquire", "config", "demo", "evaluate", "export", "export-answers", "init", "lcm-correct",
            "lcm-train", "pseudolabel", "query", "report", "round", "run", "status", "train")
_COMMAND = re.compile(r"(?<![\w./-])a2lc (?=(?:%s)(?![\w-]))" % "|".join(
    re.escape(c) for c in sorted(COMMANDS, key=len, reverse=True)))


def bare_workspace() -> Path:
    """The workspace a bare ``a2lc`` uses: ``$A2LC_WORKSPACE``, else ``a2lc-work`` in the current folder."""
    from .workspace import DEFAULT_WORKSPACE

    return Path(os.environ.get("A2LC_WORKSPACE") or DEFAULT_WORKSPACE)


def set_workspace(root: Path, chosen_by: str = "-w") -> None:
    """Record this run's workspace (``chosen_by``: ``-w``, ``A2LC_WORKSPACE`` or ``default``)."""
    global _flag, _chosen_by
    _chosen_by = chosen_by
    _flag = None if _same(Path(root), bare_workspace()) else f"-w {shlex.quote(str(root))}"


def reset() -> None:
    """No workspace recorded (hints stay bare): for library use outside the CLI."""
    global _flag, _chosen_by
    _flag, _chosen_by = None, "default"


def chosen_by() -> str:
    """How this run's workspace was chosen: ``-w``, ``A2LC_WORKSPACE`` or ``default``."""
    return _chosen_by


def how_chosen() -> str:
    """Words for the way the workspace was chosen, for "does not exist" errors: ``check -w``, ``check
    $A2LC_WORKSPACE``, or that the default folder was used and ``-w`` picks another."""
    if _chosen_by == "A2LC_WORKSPACE":
        return "check $A2LC_WORKSPACE (it chose this folder) or pass -w DIR"
    if _chosen_by == "default":
        return "no -w was given, so a2lc looked for the default ./a2lc-work; pass -w DIR for another workspace"
    return "check -w"


def localise(text: str) -> str:
    """``text`` with ``-w <path>`` added to each ``a2lc COMMAND`` it suggests (``a2lc`` followed by one of
    :data:`COMMANDS`, wherever it stands: in backticks, after ``next:`` or ``(or``), when this run's workspace is not the one a bare ``a2lc`` finds."""
    if not _flag or not text:
        return text
    return _COMMAND.sub(lambda m: f"a2lc {_flag} ", text)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().absolute() == b.expanduser().absolute() or (
            a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False
