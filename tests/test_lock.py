"""Two writers, stale locks and readers (issue 8): the workspace's write lock (``.lock`` + flock).

- a second writer fails at once (exit 3) naming the holder's pid, command and start time, while
  the holder (a real ``a2lc pseudolabel`` stalled mid-stage by ``A2LC_STALL_AT``) keeps running;
- readers (``status``, ``evaluate``) work meanwhile and see the last finished artifacts;
- the lock of a killed holder is detected, named and taken over, also by racing takers;
- a reader polling ``query.h5`` while another process rewrites it many times only ever sees
  complete files (a prefix of the final answer log, with a valid checksum).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from a2lc_cli.errors import WorkspaceLocked
from a2lc_cli.state import Answers, Query, read_query, write_query
from a2lc_cli.status import workspace_status
from a2lc_cli.workspace import Workspace
from crashkit import ROOT, a2lc_env, assert_same_arrays, file_hashes, h5_arrays, trace_counts
from support import write_workspace


def _wait_for(pred, proc, timeout=90.0, what=""):
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended early: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def built(tmp_path, cli):
    ws = tmp_path / "ws"
    for args in (("init", "--n-train", 6, "--n-val", 2, "--height", 32, "--width", 48), ("pseudolabel",)):
        code, _, err = cli("-q", "-w", ws, *args)
        assert code == 0, err
    return ws


def test_second_writer_fails_at_once_readers_work_and_a_killed_holders_lock_is_cleared(built, cli, tmp_path):
    ws = built
    code, out, _ = cli("-q", "-w", ws, "evaluate", "--metric", "data-miou", "--r", 0, "--json")
    assert code == 0
    miou = json.loads(out)["miou"]
    dataset = h5_arrays(ws / "dataset.h5")
    config = (ws / "config.json").read_bytes()
    trace = tmp_path / "trace"
    holder = subprocess.Popen(
        [sys.executable, "-m", "a2lc_cli", "-w", str(ws), "pseudolabel", "--force", "--restart", "--checkpoint-every", "2"],
        env=a2lc_env(A2LC_STALL_AT="pseudolabel.image:3", A2LC_STALL_SECONDS="300", A2LC_TRACE=str(trace)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_for(lambda: trace_counts(trace).get("pseudolabel.image", 0) >= 3, holder, what="the holder mid-stage")
        lock = json.loads((ws / ".lock").read_text())
        assert lock["pid"] == holder.pid and "pseudolabel --force --restart" in lock["command"]

        for args in (("pseudolabel", "--force"), ("train", "--r", 0, "--device", "cpu"), ("config", "set", "seed=3"),
                     ("round", "--r", 1)):
            code, _, err = cli("-w", ws, *args)
            line = " ".join(err.split())
            assert code == 3, (args, err)
            assert line.startswith("error: workspace") and len(err.strip().splitlines()) == 1, err
            assert f"in use by pid {holder.pid}" in line and "pseudolabel --force --restart" in line, line
            assert f"since {lock['since']}" in line, line
        assert holder.poll() is None  # the refusals did not wait for the holder

        code, out, err = cli("-w", ws, "status", "--json")  # readers: no lock, last finished artifacts
        assert code == 0, err
        assert json.loads(out)["dataset"]["images"] == 6
        code, out, err = cli("-q", "-w", ws, "evaluate", "--metric", "data-miou", "--r", 0, "--json")
        assert code == 0, err
        assert json.loads(out)["miou"] == miou
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()
    assert holder.returncode == -signal.SIGKILL
    assert (ws / "config.json").read_bytes() == config
    assert json.loads((ws / ".lock").read_text())["pid"] == holder.pid  # left behind by the killed holder

    trace.unlink()
    os.environ["A2LC_TRACE"] = str(trace)
    try:
        code, out, err = cli("-w", ws, "pseudolabel", "--force", "--checkpoint-every", 2)
    finally:
        del os.environ["A2LC_TRACE"]
    line = " ".join(err.split())
    assert code == 0, err
    assert f"cleared a stale lock of {ws}: pid {holder.pid}" in line and "pseudolabel --force --restart" in line, line
    assert trace_counts(trace)["pseudolabel.image"] == 4  # the killed run's first two images were kept
    assert_same_arrays(h5_arrays(ws / "dataset.h5"), dataset)
    assert not [k for k in file_hashes(ws) if k.startswith(".")]  # no lock, temporaries or partial folder


def test_lock_is_reentrant_and_released(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.lock("outer"):
        holder = json.loads(ws.lock_path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "outer"
        with ws.lock("inner"):  # e.g. `round` running `train`
            assert json.loads(ws.lock_path.read_text())["command"] == "outer"
        assert ws.lock_path.exists()
    assert not ws.lock_path.exists()


def test_a_held_lock_refuses_even_when_its_file_names_a_dead_pid(tmp_path):
    """What counts is the flock, not the pid written in the file (pids are reused)."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.lock_path.write_text(json.dumps({"pid": _dead_pid(), "host": "h", "command": "a2lc train", "since": "noon"}))
    fd = os.open(ws.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description holds it
        with pytest.raises(WorkspaceLocked, match="running 'a2lc train' since noon"):
            with ws.lock("second"):
                pass
    finally:
        os.close(fd)
    with ws.lock("third"):  # released: now it is stale and is taken over
        assert json.loads(ws.lock_path.read_text())["command"] == "third"


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"pid": 1, "host": "elsewhere"})])
def test_an_unheld_lock_file_is_stale_whatever_it_says(tmp_path, content):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.lock_path.write_text(content)
    with ws.lock("taker"):
        assert json.loads(ws.lock_path.read_text())["command"] == "taker"
    assert not ws.lock_path.exists()


_RACER = """
import json, os, sys, time
from a2lc_cli.errors import WorkspaceLocked
from a2lc_cli.workspace import Workspace
ws, go = Workspace(sys.argv[1]), float(sys.argv[2])
while time.time() < go:
    time.sleep(0.001)
try:
    with ws.lock("racer %d" % os.getpid()):
        t0 = time.time(); time.sleep(0.4); t1 = time.time()
    print(json.dumps({"held": [t0, t1]}))
except WorkspaceLocked as e:
    print(json.dumps({"refused": str(e)}))
"""


def test_racing_writers_take_a_stale_lock_one_at_a_time(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename, "command": "dead"}))
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(ws), str(go)], env=a2lc_env(), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    held = sorted(r["held"] for r in results if "held" in r)
    assert held, results
    for (a0, a1), (b0, b1) in zip(held, held[1:]):
        assert a1 <= b0, held  # never two holders at once
    for r in results:
        if "refused" in r:
            assert "running 'racer " in r["refused"], r
    assert not (ws / ".lock").exists()


_WRITER = """
import sys
import numpy as np
from a2lc_cli.annotator import new_answers
from a2lc_cli.state import Query, read_query, write_query
from a2lc_cli.workspace import Workspace
ws, n = Workspace(sys.argv[1]), int(sys.argv[2])
with ws.lock("rewriter"):
    p = ws.artifact(1, "query.h5")
    for k in range(n):
        q = read_query(p)
        new = new_answers(np.array([q.selected[k % len(q.selected)]]), np.array([k % 3]), unit="mask",
                          annotator="w%d" % k)
        write_query(p, Query(q.selected, q.selected_score, q.answers.concat(new), q.attrs),
                    inputs=q.attrs["inputs"], meta=q.attrs["meta"])
"""


def test_readers_never_see_a_half_written_query_file(tmp_path, cli):
    seg = np.kron(np.arange(4, dtype=np.int32).reshape(2, 2), np.ones((4, 4), np.int32))
    lab = np.zeros((8, 8), np.uint8)
    ws, _ = write_workspace(tmp_path / "ws", num_classes=3, segments=[seg, seg], labels0=[lab, lab], gts=[lab, lab])
    qp = ws.artifact(1, "query.h5")
    write_query(qp, Query(np.arange(8, dtype=np.int64), np.ones(8, np.float32), Answers.empty(), {}),
                inputs={}, meta={})
    n = 120
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(ws.root), str(n)], env=a2lc_env(), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, reads = [], 0
    try:
        while True:
            running = writer.poll() is None
            q = read_query(qp)  # checksum verified: a torn file would raise
            k = len(q.answers)
            assert q.answers.annotator.tolist() == [f"w{j}" for j in range(k)]  # a prefix of the final log
            assert not seen or k >= seen[-1]
            seen.append(k)
            reads += 1
            if reads % 10 == 0:
                st = workspace_status(ws)
                assert st["rounds"][1]["selected"] == 8 and "error" not in st["rounds"][1]
            if not running:
                break
        assert writer.returncode == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
        writer.stderr.close()
    assert seen[-1] == n
    assert len({k for k in seen if 0 < k < n}) >= 3, seen  # the reads really overlapped the rewrites
    code, out, err = cli("-w", ws.root, "status", "--json")
    assert code == 0, err
    assert json.loads(out)["rounds"][1]["answers"] == 8
