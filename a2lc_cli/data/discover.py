"""THE file-discovery rule of every on-disk source and the import labeler.

One function, :func:`find_files`, lists the files of a folder that a source (or the
import labeler) may use, so that every kind of file is found the same way:

- hidden files and folders (name starting with ``.``: ``.DS_Store``, macOS
  AppleDouble twins ``._<name>``, editor swap files) and OS metadata
  (``Thumbs.db``, ``desktop.ini``, ``__MACOSX/``, ``@eaDir/``, ``$RECYCLE.BIN/``,
  ``System Volume Information/``) are skipped;
- extensions (suffixes) match case-insensitively for every kind of file: images,
  labels, pseudo-labels, mask-id maps (``IMG_0001.JPG`` pairs with ``IMG_0001.PNG``);
- a used file whose name is not valid UTF-8 (``caf\\xe9.png`` from an old zip) is a
  one-line error naming it: names are stored in ``dataset.h5`` as UTF-8.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from ..errors import A2LCError

IGNORED_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
IGNORED_DIRS = frozenset({"__macosx", "@eadir", "$recycle.bin", "system volume information"})


def is_ignored(name: str, *, folder: bool = False) -> bool:
    """Whether a file (or folder) name is hidden or OS metadata, never a dataset file."""
    low = name.lower()
    return name.startswith(".") or low in (IGNORED_DIRS if folder else IGNORED_FILES)


def shown(path: Path | str) -> str:
    """A path as printable text: undecodable bytes appear as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_storable(path: Path, rel: str) -> None:
    """``rel`` (a name a2lc stores) must be valid UTF-8; otherwise a one-line error naming ``path``."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise A2LCError(
            f"{shown(path)}: file name is not valid UTF-8 (a2lc stores image names as UTF-8); rename the file"
        ) from None


def find_files(folder: Path, suffixes: tuple[str, ...], *, depth: int | None = None, what: str = "file",
               only: Collection[str] | None = None) -> dict[str, Path]:
    """``key`` → path of every file under ``folder`` whose name ends with one of ``suffixes``.

    key: the path relative to ``folder`` (``/``-separated) without the matched suffix.
    suffixes: e.g. ``(".png",)`` or ``("_leftImg8bit.png",)``, matched case-insensitively
    (the longest matching one is removed). depth: exact number of path components of
    matched files (1 = directly in ``folder``), ``None`` = any depth. Hidden and OS
    metadata files and folders are skipped. Two files with one key (``a.png`` and
    ``a.PNG``, ``a.jpg`` and ``a.png``) and names that are not valid UTF-8 are errors.
    only: the keys that will be used (the import labeler's train image names); files with
    any other key are skipped before any check, so an unused file is never refused (a name
    that is not valid UTF-8 can never be one of them).
    Returns an empty dict when ``folder`` is not a directory; keys are sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    lowered = sorted((s.lower() for s in suffixes), key=len, reverse=True)
    out: dict[str, Path] = {}
    seen: set[tuple[int, int]] = set()  # (device, inode) of the folders walked: a symlink loop ends here

    def walk(d: Path, parts: tuple[str, ...]) -> None:
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise A2LCError(f"{shown(d)}: cannot list folder ({e.strerror or e})") from None
        for e in entries:
            is_dir = e.is_dir()
            if is_ignored(e.name, folder=is_dir):
                continue
            if is_dir:
                if depth is None or len(parts) + 1 < depth:
                    walk(Path(e.path), (*parts, e.name))
                continue
            if depth is not None and len(parts) + 1 != depth:
                continue
            low = e.name.lower()
            suffix = next((s for s in lowered if low.endswith(s) and len(low) > len(s)), None)
            if suffix is None or not e.is_file():
                continue
            path = Path(e.path)
            rel = "/".join((*parts, e.name))
            key = rel[: -len(suffix)]
            if only is not None and key not in only:
                continue
            check_storable(path, rel)
            if key in out:
                raise A2LCError(f"{shown(path)}: two {what}s are named {key!r} ({out[key].name} and {path.name})")
            out[key] = path

    walk(folder, ())
    return dict(sorted(out.items()))
