"""Damaged workspace files, absurd values typed by users (issue 15, items 6 and follow-ups).

A small workspace is built with the real CLI (init → pseudolabel → train → acquire → query → lcm-train →
lcm-correct, in-process, once per module); each case copies it, damages one file in place with h5py
(the on-disk format a2lc writes) and runs the commands that read that file: each must end in one line
``error: <file> is damaged: <what>``, exit status 2, and leave every file as it was. ``status`` must
report damage of any artifact with a non-zero exit (per-pixel maps with ``--verify``).
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZE = ("--n-train", 4, "--n-val", 2, "--height", 32, "--width", 64, "--budget", 6)
SETTINGS = ("train.iterations=2", "train.threads=1", "train.batch_size=4", "lcm.epochs=2", "lcm.tau=[0.0]")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(simulated workspace with every round-1 artifact, a workspace whose round 1 waits for people's answers)."""
    from a2lc_cli.cli import invoke

    root = tmp_path_factory.mktemp("integrity")
    ws, human = root / "ws", root / "human"

    def run(*args, at=ws):
        code = invoke(["-q", "-w", str(at), *map(str, args)])
        assert code == 0, args

    run("init", *SIZE, *(a for s in SETTINGS for a in ("--set", s)))
    run("pseudolabel")
    run("train", "--r", 0, "--device", "cpu")
    run("acquire", "--r", 1, "--device", "cpu")
    shutil.copytree(ws, human)
    run("query", "--r", 1, "--annotator", "human", at=human)
    run("query", "--r", 1)
    run("lcm-train", "--r", 1)
    run("lcm-correct", "--r", 1)
    with h5py.File(ws / "rounds/r001/lcm.h5") as f:
        assert len(f["corrected/mask"]) > 1  # τ = 0: the confidence edits below hit real rows
    return ws, human


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    msg = " ".join(lines[0].split())
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# --------------------------------------------------------------------------- in-place damage
def _set(name, index, value):
    def edit(f):
        a = f[name][()]
        a.reshape(-1)[index] = value
        f[name][...] = a
    return edit


def _attr(name, value, group="/"):
    def edit(f):
        f[group].attrs[name] = value
    return edit


def _duplicate(name):
    def edit(f):
        a = f[name][()]
        a[1] = a[0]
        f[name][...] = a
    return edit


def _name(name, value):
    """Image 0's name or path made a path that leaves export's folder (export wrote the label map there)."""
    def edit(f):
        a = f[name][()].astype(object)
        a[0] = value
        del f[name]
        f.create_dataset(name, data=a, dtype=h5py.string_dtype())
    return edit


def _huge(name, rows=None, tail=None):
    """Replace dataset ``name`` by a chunked, never-written one declaring ``rows`` rows (default: as many
    as it has) and trailing shape ``tail``: a few KiB on disk, gigabytes if read."""
    def edit(f):
        old = f[name]
        shape = (old.shape[0] if rows is None else rows,) + (old.shape[1:] if tail is None else tail)
        dtype = old.dtype
        del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1,) * (len(shape) - 1) + (1 << 16,))
    return edit


def _move_pixel(f):
    """One pixel of image 0's first mask given to its second mask: ids stay in range, areas disagree."""
    seg = f["pixels/segment"][()]
    k = int(np.flatnonzero(seg == 0)[0])
    seg[k] = 1
    f["pixels/segment"][...] = seg


def _masks_image(f):
    a = f["masks/image"][()]
    a[-1] = 0
    f["masks/image"][...] = a


def _stats(f):
    v = f["stats/label0_values"][()]
    v[0] -= 1
    v[200] += 1
    f["stats/label0_values"][...] = v


STATUS, VERIFY = ("status", "--json"), ("status", "--json", "--verify")
EVALUATE = ("evaluate", "--metric", "data-miou", "--r", 1, "--json")
EXPORT = ("export", "EXPORT", "--r", 1)
TRAIN = ("train", "--r", 1, "--device", "cpu", "--force")  # --force: θ_1 is current (plain, train says so without reading)
ACQUIRE = ("acquire", "--r", 1, "--device", "cpu")
LCM_TRAIN = ("lcm-train", "--r", 1)
LCM_CORRECT = ("lcm-correct", "--r", 1)
ALL_DATASET = (STATUS, EVALUATE, EXPORT, TRAIN, ACQUIRE, LCM_TRAIN)

CASES = [
    # dataset.h5: attributes, the image index, the class table, every mask-table column, NaN, the stats
    ("dataset.h5", _attr("num_classes", np.array([3, 4])), ALL_DATASET, "attribute 'num_classes' is an array"),
    ("dataset.h5", _attr("has_gt", np.array([1, 0])), ALL_DATASET, "attribute 'has_gt' is an array"),
    ("dataset.h5", _attr("uid", np.arange(3)), ALL_DATASET, "attribute 'uid' is an array"),
    ("dataset.h5", _attr("meta", "{nope"), ALL_DATASET, "attribute 'meta' is not valid JSON"),
    ("dataset.h5", _attr("fill_label", 300), ALL_DATASET, "fill_label 300"),
    ("dataset.h5", _duplicate("images/name"), ALL_DATASET, "images/name holds"),
    ("dataset.h5", _duplicate("classes/names"), ALL_DATASET, "classes/names holds"),
    ("dataset.h5", _name("images/name", "../../../escape"), (STATUS, EXPORT), "images/name: image 0 has the name"),
    ("dataset.h5", _name("images/name", "/tmp/escape"), (STATUS, EXPORT), "images/name: image 0 has the name"),
    ("dataset.h5", _name("images/path", "images/../../../escape.png"), (STATUS, EXPORT), "images/path: image 0"),
    ("dataset.h5", _set("classes/palette", 4, 0), (STATUS,), None),  # in range: not damage
    ("dataset.h5", _set("masks/bbox", 0, -1), ALL_DATASET, "masks/bbox: mask 0"),
    ("dataset.h5", _set("masks/bbox", 2, 1), ALL_DATASET, "masks/bbox: mask 0"),  # smaller than the mask
    ("dataset.h5", _set("masks/area", 3, -1), ALL_DATASET, "masks/area"),
    ("dataset.h5", _set("masks/area", 3, 10**6), ALL_DATASET, "masks/area"),
    ("dataset.h5", _masks_image, ALL_DATASET, "masks/image does not match"),
    ("dataset.h5", _set("masks/label0", 1, 200), ALL_DATASET, "masks/label0: label 200 is not a class"),
    ("dataset.h5", _set("masks/gt_label", 1, 19), ALL_DATASET, "masks/gt_label: label 19 is not a class"),
    ("dataset.h5", _set("masks/gt_purity", 2, np.nan), ALL_DATASET, "masks/gt_purity holds NaN"),
    ("dataset.h5", _set("masks/score", 2, np.inf), ALL_DATASET, "masks/score holds inf"),
    ("dataset.h5", _set("masks/prompt", 0, 99), ALL_DATASET, "masks/prompt"),
    ("dataset.h5", _set("images/height", 0, 0), ALL_DATASET, "images/height"),
    ("dataset.h5", _stats, ALL_DATASET, "stats/label0_values"),
    # per-pixel maps: checked where read (and by status --verify)
    ("dataset.h5", _set("pixels/gt", 5, 200), (VERIFY, EVALUATE), "pixels/gt of image 0: label 200 is not a class"),
    ("dataset.h5", _set("pixels/label0", 5, 200), (VERIFY, EVALUATE, EXPORT, TRAIN), "pixels/label0 of image 0"),
    ("dataset.h5", _set("pixels/segment", 5, 10**6), (VERIFY, EVALUATE, EXPORT, TRAIN, ACQUIRE), "pixels/segment of image 0"),
    ("dataset.h5", _move_pixel, (VERIFY, EVALUATE, EXPORT, TRAIN, ACQUIRE), "masks/area says"),
    # acquire.h5
    ("rounds/r001/acquire.h5", _set("mean_prob", 2, np.nan), (STATUS, LCM_TRAIN, LCM_CORRECT), "mean_prob holds NaN"),
    ("rounds/r001/acquire.h5", _set("mean_prob", 2, 7.0), (STATUS, LCM_TRAIN, LCM_CORRECT), "mean_prob: probability 7.0"),
    ("rounds/r001/acquire.h5", _set("score", 2, np.nan), (STATUS, LCM_TRAIN, LCM_CORRECT), "score holds NaN"),
    ("rounds/r001/acquire.h5", _set("dominant", 0, 200), (STATUS, LCM_TRAIN, LCM_CORRECT), "dominant"),
    ("rounds/r001/acquire.h5", _attr("meta", np.zeros(2)), (STATUS, LCM_TRAIN, LCM_CORRECT), "attribute 'meta' is an array"),
    ("rounds/r001/acquire.h5", _attr("kind", np.array([b"acquire", b"x"])), (STATUS, LCM_TRAIN), "attribute 'kind' is an array"),
    # query.h5 (the answers' checksum stays valid: these columns are not in it or are rewritten alike)
    ("rounds/r001/query.h5", _set("selected/score", 0, np.nan), (STATUS, EVALUATE, EXPORT, TRAIN, LCM_TRAIN),
     "selected/score holds NaN"),
    ("rounds/r001/query.h5", _duplicate("selected/mask"), (STATUS, EVALUATE, EXPORT, TRAIN, LCM_TRAIN), "selected/mask holds"),
    ("rounds/r001/query.h5", _attr("count", np.arange(2), group="answers"), (STATUS, EVALUATE, EXPORT, LCM_TRAIN),
     "attribute 'count' of /answers is an array"),
    # lcm.h5
    ("rounds/r001/lcm.h5", _set("corrected/confidence", 0, np.nan), (STATUS, EVALUATE, EXPORT, TRAIN),
     "corrected/confidence holds NaN"),
    ("rounds/r001/lcm.h5", _set("log_confidence", 0, np.nan), (STATUS, EVALUATE, EXPORT, TRAIN), "log_confidence holds NaN"),
    ("rounds/r001/lcm.h5", _duplicate("corrected/mask"), (STATUS, EVALUATE, EXPORT, TRAIN), "corrected/mask holds"),
    ("rounds/r001/lcm.h5", _set("corrected/label", 0, 200), (STATUS, EVALUATE, EXPORT, TRAIN), "corrected/label: label 200"),
    # declared sizes the file does not hold (issue 15: a 2**31-row dataset in a few KiB got readers OOM-killed)
    ("dataset.h5", _huge("pixels/segment", 2**31), ALL_DATASET, "pixels/segment declares 2147483648 rows"),
    ("rounds/r001/acquire.h5", _huge("mean_prob", None, (2**28,)), (STATUS, LCM_TRAIN, LCM_CORRECT),
     "mean_prob declares"),
    ("rounds/r001/query.h5", _huge("answers/seconds", 2**31), (STATUS, EVALUATE, EXPORT, LCM_TRAIN),
     "answers/seconds declares 2147483648 rows"),
    ("rounds/r001/lcm.h5", _set("corrected/mask", 0, 10**6), (STATUS, EVALUATE, EXPORT, TRAIN), "refers to mask 1000000"),
]


@pytest.mark.parametrize("target, edit, commands, needle", CASES,
                         ids=[f"{c[0].rsplit('/', 1)[-1]}-{c[3] or 'in-range'}"[:60] for c in CASES])
def test_damaged_files_are_one_line_errors_in_every_reader(built, cli, tmp_path, target, edit, commands, needle):
    ws = tmp_path / "ws"
    shutil.copytree(built[0], ws)
    with h5py.File(ws / target, "r+") as f:
        edit(f)
    before = snapshot(ws)
    for command in commands:
        command = [str(tmp_path / "export") if a == "EXPORT" else a for a in command]
        code, out, err = cli("-q", "-w", ws, *command)
        if needle is None:  # a value in range is not damage (and cannot be detected)
            assert code == 0, err
            continue
        one_line_error(code, err, f"{ws / target} is damaged: ", needle)
        if command[0] == "status":  # --json: one object naming the damage
            assert needle in json.loads(out)["error"]
        assert snapshot(ws) == before, command
        assert not (tmp_path / "export").exists() or not any((tmp_path / "export").rglob("*.png")), command


def test_status_without_verify_does_not_read_pixel_maps(built, cli, tmp_path):
    """The per-pixel maps are checked where read: plain `status` stays cheap and does not see them."""
    ws = tmp_path / "ws"
    shutil.copytree(built[0], ws)
    with h5py.File(ws / "dataset.h5", "r+") as f:
        _set("pixels/gt", 5, 200)(f)
    code, out, err = cli("-q", "-w", ws, "status", "--json")
    assert code == 0, err
    code, out, err = cli("-q", "-w", ws, "status", "--json", "--verify")
    one_line_error(code, err, "pixels/gt of image 0")
    code, out, err = cli("-q", "-w", built[0], "status", "--json", "--verify")
    assert code == 0 and json.loads(out)["dataset"]["verified_pixels"] == 4 * 32 * 64


def test_the_intact_workspace_passes_every_check(built, cli):
    from a2lc_cli import integrity
    from a2lc_cli.state import Dataset

    ws = built[0]
    with Dataset(ws / "dataset.h5") as ds:
        assert integrity.verify_pixels(ds) == 4 * 32 * 64
        present = [(name, kind) for name, kind, _ in integrity.round_files() if (ws / "rounds/r001" / name).exists()]
        assert [name for name, _ in present] == ["acquire.h5", "query.h5", "lcm.pt", "lcm.h5"]  # no θ_1 yet
        for name, kind in present:
            assert integrity.artifact_damage(ws / "rounds/r001" / name, kind, n_masks=ds.n_masks,
                                             num_classes=ds.num_classes) is None


@pytest.mark.parametrize("target, stage", [("rounds/r001/lcm.pt", "lcm-train"), ("rounds/r000/model.pt", "train")])
def test_a_truncated_torch_artifact_shows_as_damaged_in_status(built, cli, tmp_path, target, stage):
    """Every declared stage's artifact is checked by `a2lc status` (the registry's, a2lc_cli.integrity.round_files):
    a truncated lcm.pt or model.pt is damage (exit 2, named), not merely "stale"."""
    ws = tmp_path / "ws"
    shutil.copytree(built[0], ws)
    data = (ws / target).read_bytes()
    (ws / target).write_bytes(data[: len(data) // 2])
    code, out, err = cli("-q", "-w", ws, "status", "--json")
    one_line_error(code, err, str(ws / target))
    res = json.loads(out)
    r = int(target.split("/")[1][1:])
    assert res["rounds"][r]["stages"][stage] == "damaged" and str(ws / target) in res["error"]


def test_every_reader_of_workspace_hdf5_goes_through_open_artifact():
    """The kind of fault, not the examples: outside store.py and dataset_file.py (the writers' own part files), a2lc opens HDF5
    files with h5py.File only for its own progress files (acquire's shards and partial, pseudolabel's
    shards). A new reader of a workspace artifact must use store.open_artifact."""
    allowed = {("store.py", "open_artifact"), ("store.py", "artifact_uid"), ("store.py", "memory_h5"),
               ("store.py", "write_large_h5"), ("store.py", "open_progress")}  # progress files: store.open_progress
    found = set()
    for path in (ROOT / "a2lc_cli").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Call) and ast.unparse(node.func) == "h5py.File":
                        found.add((path.name, fn.name))
    assert found <= allowed, found - allowed


# --------------------------------------------------------------------------- numbers users type
BIG = "9" * 5000


@pytest.mark.parametrize("setting, needle", [
    ("train.crop=true", "train.crop: Input should be a valid integer (got true)"),
    ("train.crop=2.0", "train.crop: Input should be a valid integer (got 2.0)"),
    ("method.rounds=1e2", "method.rounds: Input should be a valid integer"),
    ("lcm.hidden=[64.0]", "lcm.hidden.0: Input should be a valid integer"),
    ("train.flip=1", "train.flip: Input should be a valid boolean (got 1)"),
    ("train.flip=yes", "train.flip: Input should be a valid boolean (got 'yes')"),
    ("lcm.lr=true", "lcm.lr: Input should be a valid number (got true)"),
    ("lcm.tau=[true]", "lcm.tau.0: Input should be a valid number"),
    ("train.lr=\"0.1\"", "train.lr: Input should be a valid number (got '0.1')"),
    (f"seed={BIG}", "--set seed: a number with 5000 digits (more than 4300) is too large"),
    (f"lcm.tau=[{BIG}]", "--set lcm.tau: a number with 5000 digits"),
    (f"lcm.lr={BIG}", "--set lcm.lr: a number with 5000 digits"),
])
def test_config_values_are_strictly_typed(tmp_path, cli, setting, needle):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "init", "--n-train", 2, "--n-val", 1, "--height", 16, "--width", 32)[0] == 0
    before = (ws / "config.json").read_bytes()
    code, _, err = cli("-w", ws, "config", "set", setting)
    msg = one_line_error(code, err, needle)
    assert len(msg) < 300
    assert (ws / "config.json").read_bytes() == before
    # the same value written into config.json by hand is refused by the commands that read it
    key, _, value = setting.partition("=")
    cfg = json.loads(before)
    node = cfg
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    node[last] = "__VALUE__"
    (ws / "config.json").write_text(json.dumps(cfg).replace('"__VALUE__"', value))
    code, _, err = cli("-w", ws, "status")
    msg = one_line_error(code, err, str(ws / "config.json"))
    assert len(msg) < 300 and "set_int_max_str_digits" not in msg


def test_values_that_read_as_json_keep_their_type_only_when_the_key_takes_it(tmp_path, cli):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "init", "--n-train", 2, "--n-val", 1, "--height", 16, "--width", 32)[0] == 0
    for setting, key, want in [("train.crop=64", ("train", "crop"), 64), ("lcm.lr=1", ("lcm", "lr"), 1.0),
                               ("train.flip=false", ("train", "flip"), False),
                               ("source.root=123", ("source", "root"), "123"),  # a string key keeps text
                               ("source.root=null", ("source", "root"), None)]:
        code, _, err = cli("-w", ws, "config", "set", setting)
        assert code == 0, err
        got = json.loads((ws / "config.json").read_text())[key[0]][key[1]]
        assert got == want and type(got) is type(want), (setting, got)


@pytest.mark.parametrize("args, needle", [
    (("evaluate", "--r", BIG), "--r"),
    (("query", "--r", 1, "--budget", BIG), "--budget"),
    (("evaluate", "--r", 1, "--unlabeled", BIG), "(5000 digits)"),
    (("train", "--r", 1, "--iterations", BIG), "--iterations"),
    (("config", "set", f"train.iterations={BIG}"), "5000 digits"),
    (("lcm-train", "--r", 1, "--lr", "inf"), "lcm.lr: Input should be a finite number (got inf)"),
    (("lcm-train", "--r", 1, "--epochs", BIG), "--epochs"),
    (("lcm-correct", "--r", 1, "--tau", "nan"), "--tau"),
])
def test_absurd_numbers_on_the_command_line_are_one_clean_line(built, cli, args, needle):
    ws = built[0]
    before = snapshot(ws)
    code, _, err = cli("-w", ws, *args)
    msg = one_line_error(code, err, needle)
    assert len(msg) < 300 and "set_int_max_str_digits" not in msg and BIG[:100] not in msg
    assert snapshot(ws) == before


@pytest.mark.parametrize("name, text", [
    ("answers.json", '[{"mask_id": ' + BIG + ', "answer": "road"}]'),
    ("answers.json", '{"masks": [{"mask_id": 1, "answer": "road", "seconds": ' + BIG + "}]}"),
    ("answers.csv", f"mask_id,answer\n{BIG},road\n"),
    ("answers.csv", f"mask_id,answer,seconds\n1,road,{BIG}\n"),
])
def test_a_5000_digit_number_in_an_answers_file_is_one_clean_line(built, cli, tmp_path, name, text):
    ws = built[1]
    path = tmp_path / name
    path.write_text(text)
    before = snapshot(ws)
    code, _, err = cli("-w", ws, "query", "--r", 1, "--answers", path)
    msg = one_line_error(code, err)
    assert len(msg) < 300 and "set_int_max_str_digits" not in msg and BIG[:100] not in msg, msg
    assert snapshot(ws) == before


@pytest.mark.parametrize("name, n, dtype", [("classes/names", 2**31, h5py.string_dtype()),
                                            ("classes/palette", 2**31, np.uint8)])
def test_a_huge_declared_class_table_is_refused_before_it_is_read(tmp_path, name, n, dtype):
    """A few-KiB file can declare a 2**31-row class table (unwritten chunks cost nothing on disk);
    reading it got `status` OOM-killed (21 GB). The layout check refuses it without reading."""
    from a2lc_cli.errors import A2LCError
    from a2lc_cli.store import check_layout

    path = tmp_path / "dataset.h5"
    with h5py.File(path, "w") as f:
        shape = (n,) if name == "classes/names" else (n, 3)
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1024,) + shape[1:])
        if name == "classes/palette":
            f.create_dataset("classes/names", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype())
    assert path.stat().st_size < 1 << 20
    with h5py.File(path, "r") as f, pytest.raises(A2LCError, match=f"{name} has {n} rows, at most 25[56] possible"):
        check_layout(f, "dataset", path)
