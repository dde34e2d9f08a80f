"""Bad input (issue 2): each case, run through the CLI in-process, gives a one-line error naming
the file or value, a non-zero exit, no traceback, and leaves the workspace's files byte-identical."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from fixtures import (
    block_labels,
    cityscapes_labels,
    save_png,
    voc_labels,
    write_cityscapes,
    write_folder,
    write_pseudolabels,
    write_voc,
)

A = "aachen/aachen_000000_000019"
RESUME_FILE = ".dataset.h5.partial"  # the folder an interrupted pseudolabel keeps to resume from


def snapshot(ws: Path) -> dict[str, bytes]:
    """Every file under the workspace, path → bytes."""
    if not ws.exists():
        return {}
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


def assert_one_line_error(code: int, err: str, *needles: object) -> str:
    assert code != 0, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def assert_unchanged(ws: Path, before: dict[str, bytes]) -> None:
    after = snapshot(ws)
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed"
    new = set(after) - set(before)
    # only the hidden resume folder of a stopped pseudolabel (finished parts of its images)
    assert all(n.split("/")[0] == RESUME_FILE for n in new), new


@pytest.fixture
def city(tmp_path, cli):
    """A Cityscapes tree, its pseudo-labels, and a workspace after init + pseudolabel (no rounds)."""
    labels = cityscapes_labels()
    root = write_cityscapes(tmp_path / "cityscapes", labels)
    imp = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    ws = tmp_path / "ws"
    for args in (("init", "--source", "cityscapes", "--root", root),
                 ("pseudolabel", "--labeler", "import", "--import-dir", imp)):
        code, _, err = cli("-q", "-w", ws, *args)
        assert code == 0, err
    return root, imp, ws


def rerun_pseudolabel(cli, ws, imp):
    return cli("-q", "-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp)


# --------------------------------------------------------------------------- dataset root
def test_missing_dataset_root_at_init(tmp_path, cli):
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--source", "cityscapes", "--root", tmp_path / "nowhere")
    assert_one_line_error(code, err, tmp_path / "nowhere")
    assert snapshot(ws) == {}


def test_missing_dataset_root_later(city, cli):
    root, imp, ws = city
    before = snapshot(ws)
    shutil.move(root, root.with_name("moved"))
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    assert_one_line_error(code, err, root, "does not exist")
    assert_unchanged(ws, before)


def test_root_that_is_not_the_layout(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    for source in ("cityscapes", "voc", "folder"):
        ws = tmp_path / f"ws-{source}"
        code, _, err = cli("-w", ws, "init", "--source", source, "--root", tmp_path / "empty")
        assert_one_line_error(code, err, tmp_path / "empty")
        assert snapshot(ws) == {}


# --------------------------------------------------------------------------- pairing
def test_image_without_label(city, cli):
    root, imp, ws = city
    before = snapshot(ws)
    (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png").unlink()
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    line = assert_one_line_error(code, err, root / "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png")
    assert "has no label" in line
    assert_unchanged(ws, before)


def test_label_without_image(city, cli):
    root, imp, ws = city
    before = snapshot(ws)
    (root / "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png").unlink()
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    line = assert_one_line_error(code, err, root / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png")
    assert "has no image" in line
    assert_unchanged(ws, before)


@pytest.mark.parametrize("direction", ["image", "label"])
def test_voc_pairing_at_init(tmp_path, cli, direction):
    root = write_voc(tmp_path / "voc", voc_labels())
    victim = root / ("SegmentationClass/2007_000039.png" if direction == "image" else "JPEGImages/2007_000039.jpg")
    victim.unlink()
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--source", "voc", "--root", root)
    assert_one_line_error(code, err, "2007_000039")
    assert snapshot(ws) == {}


@pytest.mark.parametrize("direction", ["image", "label"])
def test_folder_pairing_at_init(tmp_path, cli, direction):
    labels = {"train": {"a": block_labels(8, 8, [0, 1]), "b": block_labels(8, 8, [1])}}
    root = write_folder(tmp_path / "data", labels, ["x", "y"])
    victim = root / ("labels/train/b.png" if direction == "image" else "images/train/b.png")
    victim.unlink()
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--source", "folder", "--root", root)
    line = assert_one_line_error(code, err)
    assert str(root / ("images/train/b.png" if direction == "image" else "labels/train/b.png")) in line
    assert snapshot(ws) == {}


def test_import_png_missing(city, cli, tmp_path):
    root, imp, ws = city
    before = snapshot(ws)
    (imp / "bochum/bochum_000000_000313.png").unlink()
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    assert_one_line_error(code, err, imp / "bochum/bochum_000000_000313.png", "missing")
    assert_unchanged(ws, before)
    assert not (ws / RESUME_FILE).exists()  # checked before any image was processed


# --------------------------------------------------------------------------- label values and sizes
def test_label_value_beyond_the_classes(city, cli):
    root, imp, ws = city
    before = snapshot(ws)
    path = root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png"
    bad = cityscapes_labels()["train"]["aachen/aachen_000001_000019"].copy()
    bad[3, 4] = 19
    save_png(path, bad)
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    assert_one_line_error(code, err, path, "label value 19")
    assert_unchanged(ws, before)


def test_pseudolabel_value_beyond_the_classes(city, cli):
    root, imp, ws = city
    before = snapshot(ws)
    path = imp / f"{A}.png"
    save_png(path, np.full((32, 64), 40, np.uint8))
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    assert_one_line_error(code, err, path, "label value 40")
    assert_unchanged(ws, before)


def test_image_label_size_mismatch(city, cli):
    root, imp, ws = city
    before = snapshot(ws)
    path = root / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png"
    save_png(path, np.zeros((32, 60), np.uint8))
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    assert_one_line_error(code, err, path, "60x32", "64x32")
    assert_unchanged(ws, before)


# --------------------------------------------------------------------------- unreadable images
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image(city, cli, damage):
    root, imp, ws = city
    before = snapshot(ws)
    path = root / "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png"
    data = path.read_bytes()
    path.write_bytes(b"not a png at all" * 10 if damage == "garbage" else data[: len(data) // 2])
    code, _, err = rerun_pseudolabel(cli, ws, imp)
    assert_one_line_error(code, err, path, "cannot read image")
    assert_unchanged(ws, before)


# --------------------------------------------------------------------------- damaged workspace files
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _foreign(p: Path) -> None:
    p.unlink()
    with h5py.File(p, "w") as f:
        f["images"] = np.arange(10)
        f.attrs["creator"] = "another tool"


def _foreign_kind(p: Path) -> None:
    p.unlink()
    with h5py.File(p, "w") as f:  # claims to be an a2lc dataset but holds nothing
        f.attrs["kind"] = "dataset"
        f.attrs["schema_version"] = 1


@pytest.mark.parametrize("damage", [_truncate, _garbage, _foreign, _foreign_kind], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("command", [("evaluate",), ("evaluate", "--json"), ("status",), ("status", "--json")])
def test_damaged_dataset_file(city, cli, damage, command):
    _, _, ws = city
    code, _, err = cli("-w", ws, "evaluate")
    assert code == 0, err
    damage(ws / "dataset.h5")
    before = snapshot(ws)
    code, _, err = cli("-w", ws, *command)
    assert_one_line_error(code, err, ws / "dataset.h5")
    assert_unchanged(ws, before)


# --------------------------------------------------------------------------- unknown option values
@pytest.mark.parametrize(
    "args, value",
    [
        (("init", "--source", "nope"), "nope"),
        (("init", "--preset", "nope"), "nope"),
        (("init", "--method", "nope"), "nope"),
        (("init", "--labeler", "nope"), "nope"),
        (("pseudolabel", "--labeler", "nope"), "nope"),
        (("evaluate", "--metric", "nope"), "nope"),
        (("evaluate", "--unlabeled", "nope"), "nope"),
        (("config", "set", "method.acquisition=nope"), "nope"),
    ],
)
def test_unknown_option_values(city, cli, args, value):
    _, _, ws = city
    if args[0] == "init":  # a fresh workspace: nothing may be created
        ws = ws.with_name("fresh")
    before = snapshot(ws)
    code, _, err = cli("-w", ws, *args)
    line = assert_one_line_error(code, err, repr(value))
    assert "choose from" in line or "should be" in line or "must be" in line
    assert_unchanged(ws, before)
    assert snapshot(ws) == before


@pytest.mark.parametrize("command", [("evaluate",), ("status",)])
def test_damaged_round_file(city, cli, command):
    _, _, ws = city
    q = ws / "rounds" / "r001" / "query.h5"
    q.parent.mkdir(parents=True)
    _garbage(q)
    before = snapshot(ws)
    code, _, err = cli("-w", ws, *command)
    assert_one_line_error(code, err, q)
    assert_unchanged(ws, before)
