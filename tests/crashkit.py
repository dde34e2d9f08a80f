"""Helpers of the reliability tests: the real CLI in a subprocess (to be killed), workspace
snapshots, "is every artifact readable" checks, and artifact comparisons."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def a2lc_env(**extra: str) -> dict[str, str]:
    """Environment of a CLI subprocess: offline, single-threaded (bitwise-reproducible CPU maths), wide."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("A2LC_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def run_a2lc(ws: Path, *args: object, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    """``python -m a2lc_cli -q -w WS ARGS...`` in a subprocess; ``env`` adds variables (A2LC_CRASH_AT=...)."""
    return subprocess.run(
        [sys.executable, "-m", "a2lc_cli", "-q", "-w", str(ws), *map(str, args)],
        capture_output=True, text=True, env=a2lc_env(**env), timeout=timeout, cwd=ROOT,
    )


def assert_killed(proc: subprocess.CompletedProcess) -> None:
    """The subprocess died of SIGKILL (the injected crash), not of an error."""
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def file_hashes(ws: Path) -> dict[str, str]:
    """path (relative, posix) → sha256 of every file under ``ws``."""
    if not ws.exists():
        return {}
    return {p.relative_to(ws).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ws.rglob("*")) if p.is_file()}


def status_json(cli, ws: Path) -> dict:
    """``a2lc status --json`` (in-process), which must succeed, without the fields that name this copy."""
    code, out, err = cli("-w", ws, "status", "--json")
    assert code == 0, err
    st = json.loads(out)
    st.pop("workspace", None)
    if isinstance(st.get("dataset"), dict):
        st["dataset"].pop("uid", None)
    if isinstance(st.get("next"), str):  # hints name the workspace (`a2lc -w COPY ...`, a2lc_cli.hints)
        import shlex

        st["next"] = st["next"].replace(f"a2lc -w {shlex.quote(str(ws))} ", "a2lc ")
    return st


def assert_readable(ws: Path) -> list[str]:
    """Open every artifact of the workspace with the reader a2lc uses for it; returns what was checked.

    Hidden files (the lock, temporaries, partial progress) are not artifacts and are skipped.
    """
    from a2lc_cli.acquire import read_acquisition
    from a2lc_cli.lcm import load_lcm
    from a2lc_cli.state import Dataset, read_corrections, read_query
    from a2lc_cli.training import load_model

    checked = []
    for p in sorted(ws.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(ws).parts):
            continue
        name = p.name
        if name == "dataset.h5":
            with Dataset(p) as ds:
                for col in ("image", "area", "bbox", "label0", "score", "prompt"):
                    ds.mask_column(col)
                for i in range(ds.n_images):
                    ds.segment(i), ds.label0(i)
        elif name == "acquire.h5":
            read_acquisition(p)
        elif name == "query.h5":
            read_query(p)
        elif name == "lcm.h5":
            read_corrections(p)
        elif name == "lcm.pt":
            load_lcm(p)
        elif name == "model.pt":
            load_model(p, "cpu")
        elif name == "model.ckpt":
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
            assert ckpt["format"] == "a2lc-train-checkpoint"
        elif name.endswith(".json"):
            json.loads(p.read_text())
        else:
            raise AssertionError(f"unexpected file {p}")
        checked.append(p.relative_to(ws).as_posix())
    return checked


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file, name → array."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray], *, skip: tuple[str, ...] = ()) -> None:
    """Bitwise-equal arrays (NaN equal to NaN) under the same names."""
    assert sorted(a) == sorted(b)
    for k in a:
        if k in skip:
            continue
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), k
        else:
            assert np.array_equal(x, y), k


def assert_same_state_dict(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def trace_counts(path: Path) -> dict[str, int]:
    """How often each faults checkpoint was reached (the A2LC_TRACE file)."""
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts
