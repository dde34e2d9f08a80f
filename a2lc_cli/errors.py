"""The one exception type users see: a bad input, reported as one line without a traceback."""

from __future__ import annotations


class A2LCError(Exception):
    """A problem with the user's input or workspace (not a bug in a2lc).

    The CLI prints ``error: <message>`` on one line and exits with ``exit_code``.
    Messages name the file or the value at fault.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(_LONG_NUMBER.sub(_shorten_number, " ".join(str(message).split())))
        if exit_code is not None:
            self.exit_code = exit_code


import re as _re

_LONG_NUMBER = _re.compile(r"\d{41,}")  # a value a user typed, echoed back: 5,000 digits make no message


def _shorten_number(m: "_re.Match[str]") -> str:
    return f"{m[0][:6]}…({len(m[0])} digits)"


def shorten_numbers(message: str) -> str:
    """``message`` with every run of more than 40 digits shortened to ``999999…(5000 digits)``."""
    return _LONG_NUMBER.sub(_shorten_number, message)


class WorkspaceLocked(A2LCError):
    """Another command holds the workspace's write lock."""

    exit_code = 3


def os_error(e: OSError, path: object | None = None, *, writing: bool = True) -> A2LCError:
    """One-line A2LCError for an operating-system error while writing (or reading) ``path``.

    ``no space left on device writing <file>`` for ENOSPC/EDQUOT (also when HDF5 wraps the
    errno in its message), ``<file>: read-only file system`` / ``permission denied`` for
    EROFS/EACCES/EPERM, else ``<file>: <strerror>``. ``path`` defaults to the error's filename.
    """
    import errno as _errno

    where = path if path is not None else (e.filename or "a file")
    code = e.errno
    text = str(e)
    if code in (_errno.ENOSPC, _errno.EDQUOT) or "No space left on device" in text or "errno = 28" in text:
        return A2LCError(f"no space left on device {'writing' if writing else 'reading'} {where}")
    if code == _errno.EROFS or "Read-only file system" in text or "errno = 30" in text:
        return A2LCError(f"cannot write {where}: read-only file system")
    if code in (_errno.EACCES, _errno.EPERM) or "Permission denied" in text or "errno = 13" in text:
        return A2LCError(f"cannot {'write' if writing else 'read'} {where}: permission denied")
    return A2LCError(f"{where}: {e.strerror or ' '.join(text.split())[:200]}")
