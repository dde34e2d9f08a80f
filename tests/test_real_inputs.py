"""Real-world inputs (issue 17): datasets as people actually have them.

Each example of the issue is a regression test, built from small files written here:
the right value, or a one-line error that leaves the workspace unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from a2lc_cli.config import Config, load_config, parse_config
from a2lc_cli.data import open_source
from a2lc_cli.data.io import read_rgb, to_uint8
from a2lc_cli.errors import A2LCError
from a2lc_cli.fingerprint import TrainImages, image_signature, signature_distance
from a2lc_cli.state import Dataset
from a2lc_cli.textio import check_name, read_lines
from fixtures import block_labels, cityscapes_labels, image_for, save_png, write_cityscapes, write_folder, write_pseudolabels
from test_bad_input import assert_one_line_error, assert_unchanged, snapshot

SKY, ROAD = (70, 130, 180), (128, 64, 128)


def folder_cfg(root: Path) -> Config:
    return parse_config({"source": {"kind": "folder", "root": str(root)}})


def sky_road(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(displayed image (H,W,3): sky on the top half, road below; its label: 0 sky, 1 road)."""
    label = np.ones((h, w), np.uint8)
    label[: h // 2] = 0
    img = np.where(label[:, :, None] == 0, np.array(SKY, np.uint8), np.array(ROAD, np.uint8)).astype(np.uint8)
    return img, label


def assert_regions(img: np.ndarray, label: np.ndarray) -> None:
    """Sky pixels under the sky label, road pixels under the road label (JPEG blurs the border a little)."""
    for cls, colour in ((0, SKY), (1, ROAD)):
        assert np.abs(img[label == cls].mean(0) - colour).max() < 4, (cls, img[label == cls].mean(0))
        assert (np.abs(img[label == cls] - colour).max(1) < 12).mean() > 0.9


def save_jpeg_with_orientation(path: Path, stored: np.ndarray, orientation: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, format="JPEG", quality=95, exif=exif.tobytes())


def init_and_pseudolabel(cli, ws: Path, root: Path, imp: Path, *extra: object) -> tuple[str, str]:
    code, _, err = cli("-q", "-w", ws, "init", "--source", "folder", "--root", root, *extra)
    assert code == 0, err
    code, out, err = cli("-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp, "--json")
    assert code == 0, err
    return out, err


# --------------------------------------------------------------------------- 1. pixels as displayed
def test_exif_orientation_3_jpeg_reads_as_displayed(tmp_path, cli):
    """A 64×64 JPEG stored upside down with Orientation 3, labelled on the displayed view (sky on top)."""
    shown, label = sky_road(64, 64)
    root = tmp_path / "data"
    save_jpeg_with_orientation(root / "images" / "photo.jpg", shown[::-1, ::-1].copy(), 3)
    save_png(root / "labels" / "photo.png", label)
    (root / "classes.txt").write_text("sky\nroad\n")
    src = open_source(folder_cfg(root))
    img = src.image("train", 0).astype(int)
    assert_regions(img, label)  # the pixels under the "sky" label are sky
    # and through a whole pseudolabel run, the annotation bundle's reader sees the same pixels
    ws = tmp_path / "ws"
    init_and_pseudolabel(cli, ws, root, write_pseudolabels(tmp_path / "pseudo", {"photo": label}))
    with Dataset(ws / "dataset.h5") as ds:
        assert np.array_equal(TrainImages.of(open_source(load_config(ws / "config.json")), ds)(0), img.astype(np.uint8))


def test_exif_orientation_6_non_square_has_the_displayed_size(tmp_path, cli):
    """Stored 32×64 (H×W) with Orientation 6 (rotate 90° clockwise): displayed 64×32, labels drawn on that."""
    shown, label = sky_road(64, 32)
    stored = np.rot90(shown, k=1).copy()  # what the camera stored: the displayed view turned back 90° ccw
    assert stored.shape[:2] == (32, 64)
    root = tmp_path / "data"
    save_jpeg_with_orientation(root / "images" / "portrait.jpg", stored, 6)
    save_png(root / "labels" / "portrait.png", label)
    (root / "classes.txt").write_text("sky\nroad\n")
    src = open_source(folder_cfg(root))
    assert src.size("train", 0) == (64, 32)  # from the header, orientation applied
    img = src.image("train", 0).astype(int)
    assert img.shape == (64, 32, 3)
    assert_regions(img, label)
    assert src.label("train", 0).shape == (64, 32)  # no size-mismatch error
    ws = tmp_path / "ws"
    out, _ = init_and_pseudolabel(cli, ws, root, write_pseudolabels(tmp_path / "pseudo", {"portrait": label}))
    assert json.loads(out)["images"] == 1


def test_float_tiff_in_0_1_is_scaled_by_255(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    p = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(p)
    img = read_rgb(p)
    assert img.shape == (2, 2, 3)
    assert img[:, :, 0].tolist() == [[0, 64], [128, 255]]  # round(v · 255), never a black 0/1 image


def test_12_bit_png_scaled_by_its_effective_bit_depth(tmp_path):
    values = np.array([[0, 1024], [2048, 4095]], np.uint16)  # 12-bit data in a 16-bit PNG
    p = tmp_path / "g.png"
    Image.fromarray(values).save(p)
    assert read_rgb(p)[:, :, 1].tolist() == [[0, 64], [128, 255]]  # ×255/4095, not levels 0..15
    full = np.array([[0, 65535]], np.uint16)
    Image.fromarray(full).save(p)
    assert read_rgb(p)[0, :, 0].tolist() == [0, 255]
    # a 16-bit colour PNG (Pillow alone would keep the high byte only)
    import cv2

    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[0, 0] = (4095, 2048, 0)  # R, G, B
    cv2.imwrite(str(tmp_path / "c.png"), rgb[:, :, ::-1])
    assert read_rgb(tmp_path / "c.png")[0, 0].tolist() == [255, 128, 0]


def test_to_uint8_rule_hand_computed():
    where = "x.tif"
    assert to_uint8(np.array([0.0, 0.5, 1.0], np.float64), where=where, mode="F").tolist() == [0, 128, 255]
    assert to_uint8(np.array([0, 1023], np.uint16), where=where, mode="I;16").tolist() == [0, 255]  # 10-bit
    assert to_uint8(np.array([0, 200], np.uint16), where=where, mode="I;16").tolist() == [0, 200]  # fits 8 bits
    assert to_uint8(np.array([0, 16383], np.int32), where=where, mode="I").tolist() == [0, 255]  # 14-bit
    for bad in (np.array([0.0, 2.0], np.float32), np.array([np.nan], np.float32), np.array([-1], np.int32)):
        with pytest.raises(A2LCError, match="x.tif"):
            to_uint8(bad, where=where, mode="F")


def test_float_image_outside_0_1_is_a_one_line_error_naming_file_and_mode(tmp_path, cli):
    labels = {"train": {"a": block_labels(16, 16, 2, seed=0), "b": block_labels(16, 16, 2, seed=1)}}
    root = write_folder(tmp_path / "data", labels, ["sky", "road"], flat=True)
    imp = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    ws = tmp_path / "ws"
    assert cli("-q", "-w", ws, "init", "--source", "folder", "--root", root)[0] == 0
    (root / "images" / "b.png").unlink()
    Image.fromarray(np.full((16, 16), 300.0, np.float32), mode="F").save(root / "images" / "b.tif")
    before = snapshot(ws)
    code, _, err = cli("-q", "-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp)
    assert_one_line_error(code, err, "b.tif", "mode F", "[0, 1]")
    assert_unchanged(ws, before)


# --------------------------------------------------------------------------- 2. file discovery
def test_cityscapes_copied_through_macos_ignores_appledouble_and_metadata(tmp_path, cli):
    labels = cityscapes_labels()
    root = write_cityscapes(tmp_path / "cityscapes", labels)
    for p in list(root.rglob("*.png")):
        (p.parent / f"._{p.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
    (root / "leftImg8bit" / "train" / ".DS_Store").write_bytes(b"junk")
    city = next(p for p in (root / "leftImg8bit" / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    (city / "Thumbs.db").write_bytes(b"junk")
    (root / "leftImg8bit" / "train" / "__MACOSX").mkdir()
    save_png(root / "leftImg8bit" / "train" / "__MACOSX" / "x_leftImg8bit.png", np.zeros((4, 4), np.uint8))
    src = open_source(parse_config({"source": {"kind": "cityscapes", "root": str(root)}}))
    assert src.names("train") == sorted(labels["train"])
    ws = tmp_path / "ws"
    imp = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    assert cli("-q", "-w", ws, "init", "--source", "cityscapes", "--root", root)[0] == 0
    code, out, err = cli("-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp, "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == len(labels["train"])


def test_upper_case_extensions_pair_for_labels_and_pseudo_labels(tmp_path, cli):
    lab = block_labels(16, 24, 2, seed=3)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.fromarray(image_for(lab)).save(root / "images" / "IMG_0001.JPG", format="JPEG", quality=95)
    save_png(root / "labels" / "IMG_0001.PNG", lab)
    (root / "classes.txt").write_text("a\nb\n")
    src = open_source(folder_cfg(root))
    assert src.names("train") == ["IMG_0001"]
    assert np.array_equal(src.label("train", 0), lab)
    imp = tmp_path / "pseudo"
    save_png(imp / "IMG_0001.PNG", lab)  # the import labeler uses the same rule
    out, _ = init_and_pseudolabel(cli, tmp_path / "ws", root, imp)
    assert json.loads(out)["images"] == 1


def test_file_name_not_utf8_is_refused_at_init(tmp_path, cli):
    labels = {"train": {"a": block_labels(16, 16, 2)}}
    root = write_folder(tmp_path / "data", labels, ["sky", "road"], flat=True)
    bad = os.path.join(os.fsencode(root / "images"), b"caf\xe9.png")
    try:
        shutil.copy(os.fsencode(root / "images" / "a.png"), bad)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--source", "folder", "--root", root)
    assert_one_line_error(code, err, "caf\\xe9.png", "not valid UTF-8")
    assert snapshot(ws) == {}  # nothing written


def test_import_dir_reads_only_the_files_it_uses(tmp_path, cli):
    """A stray non-UTF-8 file and a stray a.png/a.PNG pair in --import-dir are not looked at (docs/datasets.md);
    the train image's own file is still found through the shared rule."""
    labels = {"train": {"a": block_labels(16, 16, 2)}}
    root = write_folder(tmp_path / "data", labels, ["sky", "road"], flat=True)
    imp = write_pseudolabels(tmp_path / "pseudo", {**labels["train"], "stray": block_labels(16, 16, 2)})
    shutil.copy(imp / "stray.png", imp / "stray.PNG")
    try:
        shutil.copy(os.fsencode(imp / "a.png"), os.path.join(os.fsencode(imp), b"caf\xe9.png"))
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    out, _ = init_and_pseudolabel(cli, tmp_path / "ws", root, imp)
    assert json.loads(out)["images"] == 1


def test_two_files_one_name_by_extension_case_is_an_error(tmp_path):
    root = write_folder(tmp_path / "data", {"train": {"a": block_labels(8, 8, 2)}}, ["x", "y"], flat=True)
    shutil.copy(root / "labels" / "a.png", root / "labels" / "a.PNG")
    if len(list((root / "labels").iterdir())) != 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(A2LCError, match="two labels are named 'a'"):
        open_source(folder_cfg(root))


# --------------------------------------------------------------------------- 3. text from other tools
def test_classes_txt_with_bom_and_crlf(tmp_path, cli):
    labels = {"train": {"a": block_labels(16, 16, 2, seed=4)}}
    root = write_folder(tmp_path / "data", labels, ["x"], flat=True)
    (root / "classes.txt").write_bytes("\ufeffsky \r\nroad\r\n".encode("utf-8"))
    ws = tmp_path / "ws"
    init_and_pseudolabel(cli, ws, root, write_pseudolabels(tmp_path / "pseudo", labels["train"]))
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.classes.names == ("sky", "road")  # not '\ufeffsky'
        assert ds.classes.index("sky") == 0  # so the answer "sky" is known


def test_classes_txt_with_old_mac_line_endings_and_zero_width_name(tmp_path, cli):
    labels = {"train": {"a": block_labels(16, 16, 2, seed=4)}}
    root = write_folder(tmp_path / "data", labels, ["x"], flat=True)
    (root / "classes.txt").write_bytes(b"sky\rroad\r")
    assert open_source(folder_cfg(root)).classes.names == ("sky", "road")
    (root / "classes.txt").write_text("sky\nro\u200bad\n", encoding="utf-8")
    ws = tmp_path / "ws"
    code, _, err = cli("-w", ws, "init", "--source", "folder", "--root", root)
    assert_one_line_error(code, err, "classes.txt line 2", "U+200B")
    assert snapshot(ws) == {}


def test_voc_list_with_bom(tmp_path):
    from fixtures import voc_labels, write_voc

    root = write_voc(tmp_path / "voc", voc_labels())
    lst = root / "ImageSets" / "Segmentation" / "train.txt"
    ids = lst.read_text().split()
    lst.write_bytes(("\ufeff" + "\r\n".join(ids) + "\r\n").encode("utf-8"))
    src = open_source(parse_config({"source": {"kind": "voc", "root": str(root)}}))
    assert src.names("train") == sorted(ids)


def test_config_json_with_bom_and_crlf(tmp_path):
    p = tmp_path / "config.json"
    p.write_bytes(b"\xef\xbb\xbf{\r\n  \"seed\": 7\r\n}\r\n")
    assert load_config(p).seed == 7


def test_answers_csv_with_bom_and_crlf(tmp_path):
    from a2lc_cli.annotator import _read_rows

    p = tmp_path / "answers.csv"
    p.write_bytes("\ufeffmask_id,answer\r\n3,sky\r\n".encode("utf-8"))
    rows = _read_rows(p)
    assert [(r["mask_id"], r["answer"]) for _, r in rows] == [("3", "sky")]


def test_prompt_with_an_invisible_character_is_an_error():
    from a2lc_cli.data.base import ClassInfo, default_palette
    from a2lc_cli.labelers.grounded_sam.prompts import build_prompts

    classes = ClassInfo(("sky", "road"), default_palette(2))
    ok = build_prompts(classes, prompts={"sky": ["  blue sky "]}, thresholds={}, box_threshold=0.2)
    assert ok.phrases[0] == "blue sky"
    with pytest.raises(A2LCError, match=r"U\+200D"):
        build_prompts(classes, prompts={"sky": ["blue\u200dsky"]}, thresholds={}, box_threshold=0.2)


def test_text_reader_hand_cases(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"\xef\xbb\xbfa\r\nb\rc\n")
    assert read_lines(p, what="list") == ["a", "b", "c", ""]
    assert check_name("  sky\t", where="w") == "sky"
    for bad in ("a\x00b", "sk\u200by", "x\u2028y", "\ufeffsky"):
        with pytest.raises(A2LCError, match="invisible character"):
            check_name(bad, where="w")
    p.write_bytes(b"caf\xe9\n")
    with pytest.raises(A2LCError, match="not UTF-8 text"):
        read_lines(p, what="list")


# --------------------------------------------------------------------------- 4. folder changed after pseudolabel
@pytest.fixture
def cams(tmp_path, cli, monkeypatch):
    """A flat folder of three same-size frames cam_1, cam_2, cam_10, pseudolabelled, θ₀ trained, round 1 acquired.
    ($A2LC_WORKSPACE names it: the hints these tests compare carry no -w.)"""
    names = ["cam_1", "cam_2", "cam_10"]
    labels = {"train": {n: block_labels(24, 32, 2, block=8, seed=k) for k, n in enumerate(names)}}
    root = write_folder(tmp_path / "data", labels, ["sky", "road"], flat=True, seed=5)
    imp = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    ws = tmp_path / "ws"
    monkeypatch.setenv("A2LC_WORKSPACE", str(ws))
    init_and_pseudolabel(cli, ws, root, imp, "--set", "train.iterations=2", "--set", "method.budget=2")
    for args in (("train", "--r", "0", "--device", "cpu"), ("acquire", "--r", "1", "--device", "cpu")):
        code, _, err = cli("-q", "-w", ws, *args)
        assert code == 0, err
    return root, ws


def _rename(root: Path, old: str, new: str) -> None:
    for sub in ("images", "labels"):
        (root / sub / f"{old}.png").rename(root / sub / f"{new}.png")


@pytest.mark.parametrize("command", [  # train --force: θ₀ is current (plain, the command says so); acquire always runs
    ("train", "--r", "0", "--device", "cpu", "--force"),
    ("acquire", "--r", "1", "--device", "cpu"),
    ("query", "--r", "1", "--annotator", "human", "--export", "BUNDLE"),
])
def test_renamed_frames_stop_every_stage_that_reads_pixels(cams, cli, command, tmp_path):
    root, ws = cams
    _rename(root, "cam_2", "cam_02")  # sort order: cam_02, cam_1, cam_10 (was cam_1, cam_10, cam_2)
    before = snapshot(ws)
    command = tuple(str(tmp_path / "bundle") if a == "BUNDLE" else a for a in command)
    code, _, err = cli("-q", "-w", ws, *command)
    assert_one_line_error(code, err, "train image 0 is 'cam_02' but dataset.h5 was built from 'cam_1'",
                          "a2lc pseudolabel --force")
    assert_unchanged(ws, before)


def test_replaced_pixels_under_the_same_name_are_caught(cams, cli):
    root, ws = cams
    a, b = root / "images" / "cam_1.png", root / "images" / "cam_10.png"
    tmp = a.with_name("swap.tmp")
    a.rename(tmp), b.rename(a), tmp.rename(b)  # same names, same sizes, the pixels of two frames swapped
    before = snapshot(ws)
    code, _, err = cli("-q", "-w", ws, "train", "--r", "0", "--device", "cpu", "--force")
    assert_one_line_error(code, err, "train image 0 'cam_1' is not the image dataset.h5 was built from",
                          "a2lc pseudolabel --force")
    assert_unchanged(ws, before)


def test_resized_image_is_caught(cams, cli):
    root, ws = cams
    save_png(root / "images" / "cam_10.png", np.zeros((24, 30, 3), np.uint8))
    save_png(root / "labels" / "cam_10.png", np.zeros((24, 30), np.uint8))
    code, _, err = cli("-q", "-w", ws, "train", "--r", "0", "--device", "cpu", "--force")
    assert_one_line_error(code, err, "train image 1 'cam_10' is 30x24 but dataset.h5 was built from a 32x24 image")


def test_workspace_from_before_signatures_still_works(cams, cli):
    root, ws = cams
    with h5py.File(ws / "dataset.h5", "r+") as f:  # what an older a2lc wrote
        del f["images/signature"], f["images/signed"]
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.image_signatures() is None
    code, _, err = cli("-q", "-w", ws, "train", "--r", "0", "--device", "cpu", "--force")
    assert code == 0, err
    _rename(root, "cam_2", "cam_02")  # names are recorded in every dataset.h5, so they are still checked
    code, _, err = cli("-q", "-w", ws, "train", "--r", "0", "--device", "cpu", "--force")
    assert_one_line_error(code, err, "train image 0 is 'cam_02'")


def test_signature_hand_cases():
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :, 0] = np.arange(32)[None, :] * 8  # red grows to the right
    img[:, :, 1] = np.arange(16)[:, None] * 16  # green grows downwards
    sig = image_signature(img)
    assert sig.shape == (8, 8, 3)
    assert sig[0, :, 0].tolist() == [8 * x for x in (2, 6, 10, 14, 18, 22, 26, 30)]  # x = (k + 0.5)·32/8
    assert sig[:, 0, 1].tolist() == [16 * y for y in (1, 3, 5, 7, 9, 11, 13, 15)]  # y = (k + 0.5)·16/8
    assert signature_distance(sig, sig) == 0.0
    noisy = np.clip(img.astype(int) + 2, 0, 255).astype(np.uint8)  # a re-decode moves levels a little
    assert signature_distance(image_signature(noisy), sig) <= 2.0
    assert signature_distance(image_signature(img[::-1].copy()), sig) > 6.0


# --------------------------------------------------------------------------- 5. valid but almost surely a mistake
def test_no_mask_anywhere_warns_at_pseudolabel(tmp_path, cli):
    labels = {"train": {n: block_labels(16, 16, 2, seed=k) for k, n in enumerate("ab")}}
    root = write_folder(tmp_path / "data", labels, ["sky", "road"], flat=True)
    imp = write_pseudolabels(tmp_path / "pseudo", {n: np.full((16, 16), 255, np.uint8) for n in "ab"})
    out, err = init_and_pseudolabel(cli, tmp_path / "ws", root, imp)
    res = json.loads(out)
    assert res["masks"] == 0
    assert len(res["warnings"]) == 1 and "none of the 2 train images got a mask" in res["warnings"][0]
    assert "warning: none of the 2 train images got a mask" in " ".join(err.split())


def test_binary_mask_saved_as_0_255_warns_at_pseudolabel(tmp_path, cli):
    fg = np.zeros((16, 16), np.uint8)
    fg[4:12, 4:12] = 255  # foreground saved as 255, as image editors save a binary mask
    labels = {"train": {"a": fg}}
    root = write_folder(tmp_path / "data", labels, ["background", "cell"], flat=True)
    out, err = init_and_pseudolabel(cli, tmp_path / "ws", root, write_pseudolabels(tmp_path / "pseudo", labels["train"]))
    warnings = json.loads(out)["warnings"]
    assert any("ground truth hold only the values 0 and 255 and never class 1 ('cell')" in w for w in warnings), warnings
    assert any("pseudo-labels hold only the values 0 and 255" in w for w in warnings), warnings
    # a proper 0/1 mask gives no warning
    ok = {"train": {"a": (fg // 255).astype(np.uint8)}}
    root2 = write_folder(tmp_path / "data2", ok, ["background", "cell"], flat=True)
    out, _ = init_and_pseudolabel(cli, tmp_path / "ws2", root2, write_pseudolabels(tmp_path / "pseudo2", ok["train"]))
    assert json.loads(out)["warnings"] == []


# --------------------------------------------------------------------------- export follows the layout
@pytest.mark.parametrize("flat", [True, False])
def test_export_of_a_folder_dataset_drops_back_into_its_tree(tmp_path, cli, flat):
    labels = {"train": {"site1/0001": block_labels(16, 16, 2, seed=1), "0002": block_labels(16, 16, 2, seed=2)}}
    if not flat:
        labels["val"] = {"v": block_labels(16, 16, 2, seed=3)}
    root = write_folder(tmp_path / "data", labels, ["sky", "road"], flat=flat)
    ws = tmp_path / "ws"
    init_and_pseudolabel(cli, ws, root, write_pseudolabels(tmp_path / "pseudo", labels["train"]))
    out_dir = tmp_path / "export"
    code, _, err = cli("-q", "-w", ws, "export", out_dir, "--round", "0")
    assert code == 0, err
    sub = "labels" if flat else "labels/train"
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert written == [f"{sub}/0002.png", f"{sub}/site1/0001.png"]
    # dropped into the tree in place of the originals, they read back through the same loader
    shutil.rmtree(root / sub)
    shutil.copytree(out_dir / sub, root / sub)
    src = open_source(folder_cfg(root))
    for i, n in enumerate(src.names("train")):
        assert np.array_equal(src.label("train", i), labels["train"][n])


def test_discovery_follows_folder_symlinks_but_not_loops(tmp_path):
    root = write_folder(tmp_path / "data", {"train": {"a": block_labels(8, 8, 2)}}, ["x", "y"], flat=True)
    other = tmp_path / "more"
    other.mkdir()
    shutil.copy(root / "images" / "a.png", other / "b.png")
    shutil.copy(root / "labels" / "a.png", root / "labels" / "b.png")
    (root / "images" / "more").symlink_to(other, target_is_directory=True)  # a linked sub-folder is used
    (other / "loop").symlink_to(root / "images", target_is_directory=True)  # and a loop back ends the walk
    shutil.copy(root / "labels" / "a.png", root / "labels" / "more_b.png")
    (root / "labels" / "more").mkdir()
    shutil.move(root / "labels" / "more_b.png", root / "labels" / "more" / "b.png")
    (root / "labels" / "b.png").unlink()
    assert open_source(folder_cfg(root)).names("train") == ["a", "more/b"]


def test_annotation_page_reads_images_through_the_check(cams):
    from a2lc_cli.serve import _train_images

    root, ws = cams
    cfg = load_config(ws / "config.json")
    with Dataset(ws / "dataset.h5") as ds:
        read = _train_images(cfg, ds)
        first = read(0)
        assert first.shape == (24, 32, 3)
    _rename(root, "cam_2", "cam_02")
    with Dataset(ws / "dataset.h5") as ds:
        with pytest.raises(A2LCError, match="train image 0 is 'cam_02' but dataset.h5 was built from 'cam_1'"):
            _train_images(cfg, ds)  # when the page opens (before the server starts), not at the first image


def test_serve_refuses_to_start_after_a_rename(cams):
    """The real CLI in a subprocess (a page that started would serve until killed): one line, no server."""
    root, ws = cams
    _rename(root, "cam_2", "cam_02")
    res = subprocess.run([sys.executable, "-m", "a2lc_cli", "-q", "-w", str(ws), "query", "--r", "1", "--serve", "--port", "0"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2 and "annotate at" not in res.stdout
    assert_one_line_error(res.returncode, res.stderr, "train image 0 is 'cam_02' but dataset.h5 was built from 'cam_1'")


def test_value_counts_exact_beyond_float32_bins():
    from a2lc_cli.state import value_counts

    a = np.zeros((1 << 24) + 3, np.uint8)
    a[-1] = 7
    counts = value_counts(a)
    assert counts[0] == (1 << 24) + 2 and counts[7] == 1 and counts.sum() == a.size
    assert value_counts(np.array([[1, 1], [255, 3]], np.uint8))[[1, 3, 255]].tolist() == [2, 1, 1]


def test_interrupted_pseudolabel_does_not_resume_onto_renamed_images(tmp_path):
    from a2lc_cli.data.base import ClassInfo, default_palette
    from a2lc_cli.state import DatasetWriter, ImageProposal

    classes = ClassInfo(("a", "b"), default_palette(2))

    def writer(names):
        return DatasetWriter(tmp_path / "dataset.h5", classes=classes, names=names, paths=[""] * 3,
                             sizes=[(2, 2)] * 3, has_gt=False, meta={"m": 1})

    w = writer(["cam_1", "cam_10", "cam_2"])
    w.add_image(0, ImageProposal(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.uint8)), None,
                signature=np.zeros((8, 8, 3), np.uint8))
    w.close()  # interrupted after one image
    assert writer(["cam_1", "cam_10", "cam_2"]).images_done == 1  # same images: resumed
    assert writer(["cam_02", "cam_1", "cam_10"]).images_done == 0  # renamed since: labelled again


def test_float_rgb_tiff_that_only_opencv_reads(tmp_path):
    import cv2

    from a2lc_cli.data.io import image_size

    rgb = np.zeros((4, 6, 3), np.float32)
    rgb[..., 0] = 1.0  # red
    p = tmp_path / "f3.tif"
    cv2.imwrite(str(p), rgb[:, :, ::-1])
    assert image_size(p) == (4, 6)
    assert read_rgb(p)[0, 0].tolist() == [255, 0, 0]
