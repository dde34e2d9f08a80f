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

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import faults
from .config import Config, dump_config, load_config
from .errors import A2LCError, WorkspaceLocked

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

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        faults.checkpoint(f"rename.{path.name}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


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

        A second writer fails at once with a message naming the holder; a lock
        left by a process that no longer exists (on this host) is cleared.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        held = self._read_holder()
        if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
            yield  # re-entrant: this process already holds the lock (e.g. `round` running `train`)
            return
        command = command or " ".join(["a2lc", *sys.argv[1:]])
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._clear_stale_lock():
                    continue
                raise WorkspaceLocked(self._describe_holder()) from None
            with os.fdopen(fd, "w") as f:
                json.dump(holder, f)
                f.flush()
                os.fsync(f.fileno())
            break
        else:  # pragma: no cover - lock reappeared twice
            raise WorkspaceLocked(self._describe_holder())
        try:
            yield
        finally:
            try:
                current = json.loads(self.lock_path.read_text())
                if current.get("pid") == holder["pid"]:
                    self.lock_path.unlink()
            except (OSError, ValueError):
                pass

    def _read_holder(self) -> dict | None:
        try:
            return json.loads(self.lock_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _clear_stale_lock(self) -> bool:
        """Remove the lock if its holder is dead (same host) or the file is garbage. True if cleared."""
        holder = self._read_holder()
        if holder is None:
            return True  # vanished meanwhile
        stale = False
        if not holder or not isinstance(holder.get("pid"), int):
            # garbage; only clear if it is old enough not to be a writer mid-write
            try:
                stale = time.time() - self.lock_path.stat().st_mtime > 5
            except FileNotFoundError:
                return True
        elif holder.get("host") == socket.gethostname() and not _pid_alive(holder["pid"]):
            stale = True
        if stale:
            try:
                self.lock_path.unlink()
            except FileNotFoundError:
                pass
            return True
        return False

    def _describe_holder(self) -> str:
        h = self._read_holder() or {}
        return (
            f"workspace {self.root} is in use by pid {h.get('pid', '?')} on {h.get('host', '?')} "
            f"running '{h.get('command', '?')}' since {h.get('since', '?')}; wait for it to finish "
            f"(or remove {self.lock_path} if that process is gone)"
        )
