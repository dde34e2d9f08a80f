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


def json_failure(e: BaseException) -> str:
    """Why ``json.loads`` failed, in words and on one line (never Python's own text cut short):
    a syntax error with its line, nesting too deep, or an integer with more digits than Python
    converts (``sys.get_int_max_str_digits()``, 4300 by default)."""
    import json
    import re
    import sys

    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON (line {e.lineno}: {e.msg})"
    if isinstance(e, RecursionError):
        return "JSON nested too deeply"
    text = " ".join(str(e).split())
    if isinstance(e, ValueError) and "integer string conversion" in text:
        m = re.search(r"has (\d+) digits", text)
        digits = f"{m.group(1)} digits" if m else "too many digits"
        return f"a number with {digits} (more than {sys.get_int_max_str_digits()}) is too large"
    return text


class DuplicateKey(ValueError):
    """A JSON object holding one key twice (``json`` keeps the last silently)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key, self.pos = key, None


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            raise DuplicateKey(k)
        seen.add(k)
    return dict(pairs)


def _duplicate_line(text: str, key: str) -> int | None:
    """The line of the second occurrence of ``key`` in the object that repeats it, found by a
    second parse with the pure-Python scanner (which reports where each object starts)."""
    import json
    import json.decoder
    import json.scanner

    dec = json.JSONDecoder(object_pairs_hook=_unique_pairs)

    def parse_object(s_and_end, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return json.decoder.JSONObject(s_and_end, *args, **kwargs)
        except DuplicateKey as e:
            if e.pos is None:
                e.pos = s_and_end[1]
            raise

    dec.parse_object = parse_object  # type: ignore[attr-defined]
    dec.scan_once = json.scanner.py_make_scanner(dec)  # type: ignore[attr-defined]
    try:
        dec.decode(text)
    except DuplicateKey as e:
        if e.pos is None:
            return None
        quoted = json.dumps(key, ensure_ascii=False)
        first = text.find(quoted, e.pos)
        second = text.find(quoted, first + 1) if first >= 0 else -1
        return text.count("\n", 0, second if second >= 0 else e.pos) + 1
    except (ValueError, RecursionError):
        return None
    return None


def loads_json(text: str | bytes, *, where: str, parse_constant: object = None) -> object:
    """``json.loads`` for text a user gives a2lc (config files, answers files);
    any failure is an A2LCError ``<where>: <json_failure>``. An object holding one key twice is
    refused (``<where>: key "answer" appears twice in one object (line 3)``), never read as its last value."""
    import json

    kwargs: dict = {"object_pairs_hook": _unique_pairs}
    if parse_constant:
        kwargs["parse_constant"] = parse_constant
    try:
        return json.loads(text, **kwargs)
    except DuplicateKey as e:
        decoded = text if isinstance(text, str) else text.decode("utf-8", "replace")
        line = _duplicate_line(decoded, e.key)
        at = f" (line {line})" if line else ""
        raise A2LCError(f"{where}: key {ascii(e.key)[:60]} appears twice in one object{at}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise A2LCError(f"{where}: {json_failure(e)}") from None
