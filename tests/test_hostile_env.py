"""Hostile environments (issue 15): a full disk, a read-only workspace, markup in paths and names,
non-regular files in the workspace, absurd config values.

Full and read-only disks are real: a small tmpfs mounted by the test (root only; skipped with the
reason printed where ``mount`` is not permitted). Every writer runs as a subprocess (a crash inside
HDF5 would otherwise take pytest down) on a copy of a tiny synthetic workspace at the stage before
it, with the disk filled to a few KiB. Expected everywhere: ``error: no space left on device writing
<file>`` on one line, exit status 2, every earlier file byte-identical, no lock or temporary file left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def a2lc(ws: Path, *args, timeout: int = 300) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "a2lc_cli", "-q", "-w", str(ws), *map(str, args)],
                       capture_output=True, text=True, env=ENV, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) >= 1 and lines[-1].startswith("error: "), err
    msg = " ".join(err.strip().split("error: ", 1)[1].split())
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".partial" not in p.as_posix()}


# --------------------------------------------------------------------------- the stages, built once
STAGES = [
    ("init", None),
    ("pseudolabel", ("pseudolabel",)),
    ("train0", ("train", "--r", 0, "--device", "cpu")),
    ("acquire", ("acquire", "--r", 1, "--device", "cpu")),
    ("query", ("query", "--r", 1)),
    ("lcm-train", ("lcm-train", "--r", 1)),
    ("lcm-correct", ("lcm-correct", "--r", 1)),
]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    """{stage: workspace after it}; each a copy (mtimes kept) of the previous one with the stage run."""
    base = tmp_path_factory.mktemp("stages")
    out: dict[str, Path] = {}
    prev = None
    for name, cmd in STAGES:
        ws = base / name
        if prev is None:
            code, _, err = a2lc(ws, "init", "--n-train", 4, "--n-val", 2, "--height", 32, "--width", 64,
                                "--set", "train.iterations=3", "--set", "lcm.epochs=2", "--set", "method.budget=5",
                                "--set", "lcm.tau=[0.3]")
        else:
            shutil.copytree(prev, ws, symlinks=True)
            code, _, err = a2lc(ws, *cmd)
        assert code == 0, (name, err)
        out[name] = ws
        prev = ws
    return out


# --------------------------------------------------------------------------- a small tmpfs
class Tmpfs:
    def __init__(self, path: Path):
        self.path = path

    def fill(self, leave_kib: int) -> None:
        """Write a filler file so that about ``leave_kib`` KiB stay free."""
        st = os.statvfs(self.path)
        n = st.f_bavail * st.f_frsize - leave_kib * 1024
        filler = self.path / "filler"
        if n > 0:
            with open(filler, "ab") as f:
                f.write(b"\0" * n)

    def unfill(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A factory: tmpfs(size_kib) -> Tmpfs mounted under tmp_path (unmounted afterwards)."""
    mounted: list[Path] = []

    def make(size_kib: int) -> Tmpfs:
        mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        mnt.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            reason = f"cannot mount a tmpfs here ({(p.stderr or p.stdout).strip() or 'mount failed'}; needs root)"
            warnings.warn(reason, stacklevel=2)
            print(reason)
            pytest.skip(reason)
        mounted.append(mnt)
        return Tmpfs(mnt)

    if os.geteuid() != 0 or shutil.which("mount") is None:
        reason = "full/read-only disk tests need root to mount a tmpfs"
        print(reason)
        pytest.skip(reason)
    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _size_kib(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) // 1024


def on_tmpfs(tmpfs, src: Path, *, room_kib: int = 1024) -> tuple[Tmpfs, Path]:
    fs = tmpfs(_size_kib(src) + room_kib)
    ws = fs.path / "ws"
    shutil.copytree(src, ws, symlinks=True)
    return fs, ws


# --------------------------------------------------------------------------- full disk
FULL = [  # (stage the workspace is at, command, KiB left free)
    ("pseudolabel", ("config", "set", "seed=3"), 0),
    ("pseudolabel", ("config", "set", "seed=3"), 4),
    ("init", ("pseudolabel",), 12),
    ("pseudolabel", ("train", "--r", 0, "--device", "cpu"), 100),
    ("train0", ("acquire", "--r", 1, "--device", "cpu"), 12),
    ("acquire", ("query", "--r", 1), 8),
    ("query", ("lcm-train", "--r", 1), 12),
    ("lcm-train", ("lcm-correct", "--r", 1), 8),
]


@pytest.mark.parametrize("stage, command, free_kib", FULL, ids=[f"{c[0]}-{f}KiB" for _, c, f in FULL])
def test_full_disk_is_a_one_line_error_and_the_workspace_stays_valid(stages, tmpfs, stage, command, free_kib):
    fs, ws = on_tmpfs(tmpfs, stages[stage])
    before = snapshot(ws)
    fs.fill(free_kib)
    code, _, err = a2lc(ws, *command)
    msg = one_line_error(code, err, "no space left on device writing")
    assert str(ws) in msg  # names the file it could not write
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before  # earlier artifacts intact
    assert not (ws / ".lock").exists()
    assert not [p for p in ws.rglob("*") if ".tmp-" in p.name]
    fs.unfill()  # with room again the same command succeeds: nothing was left half-done
    code, _, err = a2lc(ws, *command)
    assert code == 0, err


def test_the_annotation_server_answers_500_on_a_full_disk_and_keeps_serving(stages, tmpfs):
    from a2lc_cli.config import Config
    from a2lc_cli.serve import make_server
    from a2lc_cli.state import read_query
    from a2lc_cli.workspace import Workspace

    from test_serve import Client

    fs, root = on_tmpfs(tmpfs, stages["acquire"])
    code, _, err = a2lc(root, "query", "--r", 1, "--annotator", "human", "--budget", 3)
    assert code == 0, err
    ws = Workspace(root)
    server, ds = make_server(ws, Config(), 1, port=0, read_image=lambda i: None)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        c = Client(server.port)
        first = c.next()[1]["mask"]["mask_id"]
        assert c.answer(first, "road")[0] == 200
        saved = ws.artifact(1, "query.h5").read_bytes()
        fs.fill(0)
        second = c.next()[1]["mask"]["mask_id"]
        status, data = c.answer(second, "car")
        assert status == 500 and "no space left on device writing" in data["error"], data
        assert ws.artifact(1, "query.h5").read_bytes() == saved  # the acknowledged answer is intact
        assert c.request("GET", "/api/info")[0] == 200  # still serving
        fs.unfill()
        assert c.answer(second, "car")[0] == 200
        assert read_query(ws.artifact(1, "query.h5")).answers.mask.tolist() == [first, second]
    finally:
        server.shutdown()
        server.server_close()
        ds.close()
        t.join(5)


def test_export_to_a_full_disk_is_a_one_line_error(stages, tmpfs):
    fs = tmpfs(64)
    fs.fill(0)
    code, _, err = a2lc(stages["query"], "export", fs.path / "labels", "--r", 1)
    one_line_error(code, err, "no space left on device writing", str(fs.path))
    assert not [p for p in fs.path.rglob("*") if ".tmp-" in p.name]


def test_report_to_a_full_disk_leaves_no_empty_plot(stages, tmpfs):
    """The report's plots were written by matplotlib straight to their names: a full disk left an
    empty miou.png and said 'writing a file'. Now rendered in memory and written atomically."""
    fs, ws = on_tmpfs(tmpfs, stages["query"], room_kib=512)
    before = snapshot(ws)
    fs.fill(0)
    code, _, err = a2lc(ws, "report")
    one_line_error(code, err, "no space left on device writing", "miou.png")
    assert not [p for p in ws.rglob("*") if p.is_file() and (".tmp-" in p.name or p.suffix == ".png")]
    assert {k: v for k, v in snapshot(ws).items() if "report" not in str(k)} == before
    fs.unfill()
    code, _, err = a2lc(ws, "report")
    assert code == 0, err
    assert all((ws / "report" / n).stat().st_size > 0 for n in ("miou.png", "queried_classes.png", "report.md"))


# --------------------------------------------------------------------------- read-only workspace
def test_read_only_workspace(stages, tmpfs, tmp_path):
    fs, ws = on_tmpfs(tmpfs, stages["lcm-correct"])
    before = snapshot(ws)
    fs.read_only()
    code, out, err = a2lc(ws, "status", "--json")
    assert code == 0, err
    assert [r["round"] for r in json.loads(out)["rounds"]] == [0, 1]
    code, out, err = a2lc(ws, "evaluate", "--metric", "data-miou", "--r", 1, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert 0 <= res["miou"] <= 100 and "read-only file system" in res["not_saved"]
    code, out, err = a2lc(ws, "evaluate", "--metric", "data-miou", "--r", 1)
    assert code == 0 and "not saved" in err and "read-only" in err, err
    code, out, err = a2lc(ws, "export", tmp_path / "labels", "--r", 1, "--json")
    assert code == 0, err
    assert len(list((tmp_path / "labels").rglob("*.png"))) == 4
    for cmd in (("config", "set", "seed=4"), ("query", "--r", 1), ("train", "--r", 1, "--device", "cpu"),
                ("pseudolabel", "--force")):
        code, _, err = a2lc(ws, *cmd)
        one_line_error(code, err, "read-only file system")
    assert snapshot(ws) == before


# --------------------------------------------------------------------------- markup, file types, config
def test_markup_in_paths_and_names_is_printed_literally(tmp_path, cli):
    ws = tmp_path / "odd [/] [b]bold[/b] ws"
    code, out, err = cli("-w", ws, "init", "--n-train", 2, "--n-val", 1, "--height", 16, "--width", 32)
    assert code == 0, err
    assert "[b]bold[/b]" in out.replace("\n", "") and "[/]" in out
    code, out, err = cli("-w", ws, "status")
    assert code == 0, err
    assert "[b]bold[/b]" in out.replace("\n", "")
    code, _, err = cli("-w", ws, "config", "set", "train.model=[/]x")
    assert code == 0, err
    code, out, err = cli("-w", ws, "config", "set", "pseudolabel.import_dir=[red]x[/red]")
    assert code == 0 and "[red]x[/red]" in out, (out, err)


def test_esc_is_the_one_helper_and_tables_escape_cells():
    from rich.console import Console

    from a2lc_cli import ui

    assert ui.esc("[/]eve [b]x") == "\\[/]eve \\[b]x"
    con = Console(width=120, record=True, file=open(os.devnull, "w"))
    con.print(ui.table("t [b]x", ["[/]c"], [["[/]eve"], ["[red]r[/red]"]]))
    text = con.export_text()
    assert "[/]eve" in text and "[red]r[/red]" in text and "t [b]x" in text and "[/]c" in text


@pytest.mark.parametrize("what", ["fifo", "loop", "broken", "socket"])
def test_only_regular_files_and_folders_are_accepted(stages, tmp_path, what, cli):
    import socket

    ws = tmp_path / "ws"
    shutil.copytree(stages["acquire"], ws, symlinks=True)
    if what == "fifo":
        target = ws / "dataset.h5"
        target.unlink()
        os.mkfifo(target)
    elif what == "loop":
        target = ws / "rounds" / "r002"
        os.symlink(target, target)
    elif what == "broken":
        target = ws / "rounds" / "r001" / "query.h5"
        os.symlink(tmp_path / "nowhere", target)
    else:
        target = ws / "rounds" / "r001" / "lcm.h5"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(target))
    before = sorted(p.name for p in ws.rglob("*"))
    for cmd in (("status",), ("round", "--r", 1), ("evaluate", "--metric", "data-miou", "--r", 0), ("export", tmp_path / "o")):
        code, _, err = cli("-w", ws, *cmd)  # in-process: a hang here would hang the test (FIFO)
        msg = one_line_error(code, err, str(target))
        assert "regular files and folders" in msg
    assert not (ws / ".lock").exists() and sorted(p.name for p in ws.rglob("*")) == before


@pytest.mark.parametrize("key, value, needle", [
    ("method.rounds", "1e9", "≤ 1000"), ("lcm.tau", "[]", "at least 1 item"), ("lcm.tau", "[-1]", "0 ≤ value ≤ 1"),
    ("lcm.tau", "[2]", "0 ≤ value ≤ 1"), ("lcm.tau", "[NaN]", "finite"), ("lcm.hidden", "[-5]", "1 ≤ value ≤ 65536"),
    ("lcm.hidden", "[0]", "1 ≤ value"), ("seed", "-1", "0 ≤ value ≤ 4294967295"), ("seed", str(2**64), "got 18446744073709551616"),
    ("lcm.lr", "inf", "valid number (got 'inf')"), ("lcm.lr", "Infinity", "finite"), ("train.threads", "100000", "≤ 1024"), ("train.batch_size", "1e12", "≤ 4096"),
    ("source.height", "99999999", "16 ≤ value ≤ 65536"), ("seed", "9" * 5000, "too large"),
])
def test_config_bounds(tmp_path, cli, key, value, needle):
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--n-train", 2, "--n-val", 1, "--height", 16, "--width", 32)
    assert code == 0, err
    before = (ws / "config.json").read_bytes()
    code, _, err = cli("-w", ws, "config", "set", f"{key}={value}")
    msg = one_line_error(code, err, needle)
    assert key.split(".")[-1] in msg
    assert (ws / "config.json").read_bytes() == before
    # the same value written into config.json by hand is refused when read, by every command
    cfg = json.loads(before)
    node = cfg
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    try:
        node[last] = json.loads(value)
    except ValueError:
        return
    (ws / "config.json").write_text(json.dumps(cfg))
    code, _, err = cli("-w", ws, "status")
    one_line_error(code, err, key)


def test_status_lists_only_rounds_that_exist(tmp_path, cli):
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--n-train", 2, "--n-val", 1, "--height", 16, "--width", 32,
                       "--set", "method.rounds=1000")
    assert code == 0, err
    code, out, err = cli("-w", ws, "status", "--json")
    assert code == 0, err
    assert [r["round"] for r in json.loads(out)["rounds"]] == [0]


@pytest.mark.parametrize("what", ["round-file", "rounds-file", "dataset-folder"])
def test_a_file_where_a_folder_should_be_and_back_is_named(tmp_path, cli, what):
    """Issue 15: `rounds/r001` as a regular file let `status` exit 0 and suggest `acquire`, then `round`
    failed with "File exists"; a folder named `dataset.h5` gave HDF5's raw "Unable to synchronously open file"."""
    ws = tmp_path / "ws"
    assert cli("-q", "-w", ws, "init", "--n-train", 4, "--n-val", 2, "--height", 32, "--width", 64)[0] == 0
    if what == "round-file":
        (ws / "rounds").mkdir()
        (ws / "rounds" / "r001").write_text("")
        needle = f"{ws / 'rounds' / 'r001'} is a file where round 1's folder should be"
    elif what == "rounds-file":
        (ws / "rounds").write_text("")
        needle = f"{ws / 'rounds'} is a file where the rounds folder should be"
    else:
        (ws / "dataset.h5").mkdir()
        needle = f"{ws / 'dataset.h5'} is a folder, not an HDF5 file"
    for cmd in (("status",), ("round", "--r", 1), ("evaluate", "--metric", "data-miou", "--r", 0)):
        code, _, err = cli("-w", ws, *cmd)
        one_line_error(code, err, needle)
