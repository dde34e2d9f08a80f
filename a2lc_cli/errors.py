"""The one exception type users see: a bad input, reported as one line without a traceback."""

from __future__ import annotations


class A2LCError(Exception):
    """A problem with the user's input or workspace (not a bug in a2lc).

    The CLI prints ``error: <message>`` on one line and exits with ``exit_code``.
    Messages name the file or the value at fault.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


class WorkspaceLocked(A2LCError):
    """Another command holds the workspace's write lock."""

    exit_code = 3
