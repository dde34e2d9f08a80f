"""The workspace directory: where the config and every stage's artifact live.

Layout (see docs/state.md)::

    <workspace>/config.json          options of every stage
    <workspace>/dataset.h5           correction units, round-0 labels, ground truth (pseudolabel)
    <workspace>/rounds/r000/         model.pt (θ_0), train.json, metrics
    <workspace>/rounds/rNNN/         acquire.h5, query.h5, lcm.pt, lcm.h5, model.pt, ...

Every file is written to a temporary name in the same directory and renamed
into place, so a killed command leaves the previous state intact. Writers hold
an exclusive lock (``.lock``); readers never take it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import faults
from .config import Config, dump_config, load_config
from .errors import A2LCError, WorkspaceLocked, os_error

DEFAULT_WORKSPACE = "a2lc-work"


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. An OSError
    (full disk, read-only or unwritable folder) becomes one A2LCError naming ``path``
    (:func:`a2lc_cli.errors.os_error`): ``no space left on device writing <path>``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        faults.checkpoint(f"rename.{path.name}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise os_error(e, path) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a binary file atomically (one plain write: a full disk is a clean OSError, see atomic_path)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: object) -> None:
    """Write a JSON file atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workspace:
    """A workspace directory and the paths of its artifacts."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # ---- paths -----------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def dataset_path(self) -> Path:
        return self.root / "dataset.h5"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def round_dir(self, r: int) -> Path:
        if r < 0:
            raise A2LCError(f"round must be ≥ 0 (got {r})")
        return self.root / "rounds" / f"r{r:03d}"

    def artifact(self, r: int, name: str) -> Path:
        """Path of a round's artifact, e.g. ``artifact(1, "acquire.h5")``."""
        return self.round_dir(r) / name

    def path(self, stage, r: int = 0) -> Path:
        """Path of ``stage``'s artifact in round ``r`` (a declared stage of :mod:`a2lc_cli.stages`, or its
        name: ``ws.path("query", 1)`` is ``rounds/r001/query.h5``; ``ws.path("pseudolabel")`` the dataset)."""
        from .stages import artifact_path, stage as find

        return artifact_path(self, r, find(stage) if isinstance(stage, str) else stage)

    def latest_round(self, stage, *, upto: int | None = None) -> int | None:
        """The latest round (≤ ``upto``) holding ``stage``'s artifact, or None."""
        from .stages import latest_round_with, stage as find

        return latest_round_with(self, find(stage) if isinstance(stage, str) else stage, upto=upto)

    def rounds_present(self) -> list[int]:
        """Rounds that have a directory, ascending."""
        d = self.root / "rounds"
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            if p.is_dir() and p.name.startswith("r") and p.name[1:].isdigit():
                out.append(int(p.name[1:]))
        return sorted(out)

    def check_entries(self) -> None:
        """Refuse a workspace where a2lc would read something other than a regular file or a folder.

        The one check of file types, run by every command before it opens anything
        (``commands._common.workspace``): the workspace folder, ``rounds/`` and each
        ``rounds/rNNN/`` (not deeper) may hold only regular files and folders, directly or
        through symbolic links. A FIFO (which would block a reader forever), a socket, a
        device, a symbolic-link loop or a broken link is a one-line A2LCError naming it.
        """
        folders = [self.root]
        if _entry_problem(self.root) is None and self.root.is_dir():
            folders.append(self.root / "rounds")
        elif self.root.exists() or self.root.is_symlink():
            raise A2LCError(f"workspace {self.root} is {_entry_problem(self.root) or 'not a folder'}")
        i = 0
        while i < len(folders):
            folder = folders[i]
            i += 1
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise A2LCError(f"cannot read the workspace folder {folder}: {e.strerror or e}") from None
            for entry in entries:
                path = Path(entry.path)
                why = _entry_problem(path)
                if why is not None:
                    raise A2LCError(f"{path} is {why}; a workspace holds only regular files and folders "
                                    "(remove or replace it)")
                if entry.name.endswith(".h5") and path.is_dir():
                    raise A2LCError(f"{path} is a folder, not an HDF5 file (remove or rename it)")
                if folder == self.root and entry.name == "rounds" and not path.is_dir():
                    raise A2LCError(f"{path} is a file where the rounds folder should be (remove or rename it)")
                if folder == self.root / "rounds" and path.is_dir():
                    folders.append(path)
                elif folder == self.root / "rounds" and _ROUND_DIR.fullmatch(entry.name):
                    raise A2LCError(f"{path} is a file where round {int(entry.name[1:])}'s folder should be "
                                    "(remove or rename it)")

    # ---- config ----------------------------------------------------------
    def config(self) -> Config:
        """The workspace config (defaults when none was written yet)."""
        return load_config(self.config_path)

    def save_config(self, cfg: Config) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, dump_config(cfg))

    def ensure_config(self) -> Config:
        """Load the config, writing the defaults first if the workspace has none."""
        cfg = self.config()
        if not self.config_path.exists():
            self.save_config(cfg)
        return cfg

    # ---- locking ---------------------------------------------------------
    @contextmanager
    def lock(self, command: str | None = None) -> Iterator[None]:
        """Hold the workspace's exclusive write lock for the duration of a command.

        The lock is ``.lock``, holding ``{"pid", "host", "command", "since"}`` of the
        holder, with an exclusive ``flock`` on it that the kernel drops when the
        holder dies, however it dies. A second writer fails at once
        (:class:`WorkspaceLocked`, exit status 3) with a message naming the holder; a
        lock file nobody holds any more (its writer was killed) is stale and is taken
        over, with a note naming the dead holder. Re-entrant within one process (e.g.
        ``round`` running ``train``). Taking the lock also removes the temporary files
        (``.<name>.tmp-<pid>``) that killed writers of this host left behind.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, self.root) from None
        key = os.path.realpath(self.lock_path)
        if _HELD.get(key):
            _HELD[key] += 1  # re-entrant: this process already holds the lock
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        command = command or " ".join(["a2lc", *sys.argv[1:]])
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        fd = self._acquire(holder)
        _HELD[key] = 1
        try:
            self._sweep_temporaries()
            yield
        finally:
            _HELD.pop(key, None)
            self._release(fd)

    def _acquire(self, holder: dict) -> int:
        """Open and flock ``.lock``, write ``holder`` into it; returns the open descriptor."""
        for _ in range(50):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:  # a read-only workspace, a full disk (no inode), no permission
                raise os_error(e, self.lock_path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise WorkspaceLocked(self._describe_holder()) from None
            except OSError as e:  # a filesystem without locks: fall back to the holder's pid
                os.close(fd)
                return self._acquire_without_flock(holder, e)
            try:  # a releasing holder may have unlinked the file we opened: then retry on the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._note_stale(_read_fd(fd))
            try:
                _write_fd(fd, holder)
            except OSError as e:  # full or read-only disk: leave no empty lock file behind
                self._release(fd)
                raise os_error(e, self.lock_path) from None
            return fd
        raise WorkspaceLocked(self._describe_holder())  # pragma: no cover - lock file churning

    def _acquire_without_flock(self, holder: dict, why: OSError) -> int:
        """Best effort where ``flock`` is unsupported: exclusive create, stale if the holder's pid is dead."""
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                old = self._read_holder()
                if old and old.get("host") == socket.gethostname() and isinstance(old.get("pid"), int) \
                        and not _pid_alive(old["pid"]):
                    self._note_stale(old)
                    self.lock_path.unlink(missing_ok=True)
                    continue
                raise WorkspaceLocked(self._describe_holder()) from None
            _write_fd(fd, holder)
            return fd
        raise WorkspaceLocked(self._describe_holder())

    def _release(self, fd: int) -> None:
        """Remove ``.lock`` (still ours: we hold its flock) and drop the flock."""
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.lock_path)):
                self.lock_path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    def _note_stale(self, old: dict | None) -> None:
        if old and old.get("pid") not in (None, os.getpid()):
            from . import ui

            ui.info(ui.esc(f"cleared a stale lock of {self.root}: pid {old.get('pid')} on {old.get('host', '?')} "
                           f"running '{old.get('command', '?')}' since {old.get('since', '?')} is gone"))

    def _sweep_temporaries(self) -> None:
        """Delete ``.<name>.tmp-<pid>`` files of processes of this host that no longer exist.

        Looks at the workspace and its folders up to three levels down (rounds, partial
        folders, shard folders), without following symbolic links.
        """
        top = len(self.root.parts)
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            if len(Path(folder).parts) - top >= 3:
                dirs[:] = []
            for name in files:
                pid = name.rpartition(".tmp-")[2]
                if name.startswith(".") and ".tmp-" in name and pid.isdigit() and int(pid) != os.getpid() \
                        and not _pid_alive(int(pid)):
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError:
                        pass

    def _read_holder(self) -> dict | None:
        try:
            return json.loads(self.lock_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return {}

    def _describe_holder(self) -> str:
        h: dict = {}
        for _ in range(40):  # the holder writes its details just after taking the lock: until then the
            h = self._read_holder() or {}  # file is empty or still names the dead holder it replaced
            pid = h.get("pid")
            if isinstance(pid, int) and (h.get("host") != socket.gethostname() or _pid_alive(pid)):
                break
            time.sleep(0.05)
        else:
            h = {"pid": "? (its details are not written yet)"}
        return (
            f"workspace {self.root} is in use by pid {h.get('pid', '?')} on {h.get('host', '?')} "
            f"running '{h.get('command', '?')}' since {h.get('since', '?')}; wait for it to finish "
            f"(a2lc clears the lock by itself once that process is gone)"
        )


_ROUND_DIR = re.compile(r"r[0-9]{3,}")


def entry_problem(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``"a FIFO (named pipe)"``,
    ``"a device"``, ``"a symbolic link loop"``...), following symbolic links; None if it is fine or missing."""
    return _entry_problem(path)


def _entry_problem(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (after symbolic links); None if fine."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return None
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device"
    return "not a regular file"


_HELD: dict[str, int] = {}  # lock files this process holds → nesting depth


def _read_fd(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _write_fd(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)
