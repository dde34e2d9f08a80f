"""THE reader of every text file a user gives a2lc: class lists, VOC image lists,
``config.json``, answers files (CSV/JSON), SAM spec files — and the check of the
names read from them (class names, image ids, prompt phrases).

Text written by other tools often carries a UTF-8 byte-order mark (Windows
Notepad, Excel's "CSV UTF-8") and CRLF or CR line endings; both are accepted
here, once, for every such file. Names are stripped of surrounding white space;
a name that still holds a control, format (zero-width space/joiner, BOM, bidi
marks) or line/paragraph-separator character is an error, because it would be
stored invisibly and never match what a person types.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from .errors import A2LCError

# Unicode categories refused inside names: Cc control, Cf format (zero-width, BOM, bidi), Zl/Zp separators
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` that may not appear in a name shown to people, or None.

    Refused: control characters (Unicode category Cc), format characters (Cf: bidi
    overrides and isolates U+202A..U+202E, U+2066..U+2069, zero-width joiners...),
    line and paragraph separators (Zl, Zp) and lone surrogates (Cs: not UTF-8).
    """
    for c in text:
        if unicodedata.category(c) in _BAD_CATEGORIES or unicodedata.category(c) == "Cs":
            return c
    return None


def read_text(path: Path, *, what: str) -> str:
    """The text of a UTF-8 file (a leading BOM dropped), line endings normalised to ``\\n``.

    what: what the file is, for errors (``"class-names file"``). Raises A2LCError
    (one line, naming the file) when it cannot be read or is not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise A2LCError(f"{path}: cannot read {what} ({e.strerror or e.__class__.__name__})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise A2LCError(f"{path}: {what} is not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path: Path, *, what: str) -> list[str]:
    """The lines of a UTF-8 text file (see :func:`read_text`), without their line endings."""
    return read_text(path, what=what).split("\n")


def check_name(name: str, *, where: str) -> str:
    """``name`` stripped; an error (naming ``where`` and the character) if it still holds an invisible character."""
    s = name.strip()
    for ch in s:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            label = unicodedata.name(ch, "control character").lower()
            raise A2LCError(f"{where}: {s!r} contains an invisible character U+{ord(ch):04X} ({label}); remove it")
    return s
