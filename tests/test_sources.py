"""The real dataset layouts (cityscapes, voc, folder) on fixtures written in their exact formats,
the PNG readers/writers, and the label-PNG round trip of the future ``a2lc export``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from a2lc_cli.config import Config, parse_config
from a2lc_cli.data import open_source
from a2lc_cli.data.base import VOID
from a2lc_cli.data.cityscapes import LABEL_TO_TRAIN, CityscapesSource
from a2lc_cli.data.folder import FolderSource
from a2lc_cli.data.io import read_label_png, read_mask_ids, read_rgb, write_label_png
from a2lc_cli.data.voc import VOCSource
from a2lc_cli.errors import A2LCError
from fixtures import (
    block_labels,
    cityscapes_labels,
    image_for,
    save_png,
    voc_labels,
    write_cityscapes,
    write_folder,
    write_voc,
)


def cfg_for(kind: str, root, **source) -> Config:
    return parse_config({"source": {"kind": kind, "root": str(root), **source}})


# --------------------------------------------------------------------------- cityscapes
def test_cityscapes_official_label_table():
    # spot checks against cityscapesScripts helpers/labels.py
    expected = {7: 0, 8: 1, 11: 2, 17: 5, 19: 6, 21: 8, 23: 10, 24: 11, 26: 13, 31: 16, 33: 18}
    for lid, tid in expected.items():
        assert LABEL_TO_TRAIN[lid] == tid
    for ignored in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 200, 255):
        assert LABEL_TO_TRAIN[ignored] == VOID
    assert sorted(LABEL_TO_TRAIN[LABEL_TO_TRAIN != VOID].tolist()) == list(range(19))


def test_cityscapes_layout_trainids(tmp_path):
    labels = cityscapes_labels()
    write_cityscapes(tmp_path, labels)
    src = open_source(cfg_for("cityscapes", tmp_path))
    assert isinstance(src, CityscapesSource)
    assert src.classes.num_classes == 19 and src.classes.names[6] == "traffic light"
    assert src.classes.fill_label == VOID and src.classes.convention == "cityscapes"
    assert tuple(src.classes.palette[0]) == (128, 64, 128) and tuple(src.classes.palette[18]) == (119, 11, 32)
    assert src.names("train") == sorted(labels["train"])  # "<city>/<stem>", sorted
    assert src.names("val") == sorted(labels["val"])
    assert src.has_gt("train") and src.has_gt("val")
    for split in ("train", "val"):
        for i, name in enumerate(src.names(split)):
            gt = src.label(split, i)
            assert gt.dtype == np.uint8 and np.array_equal(gt, labels[split][name])
            img = src.image(split, i)
            assert img.dtype == np.uint8 and img.shape == (32, 64, 3)
            # lossless PNG: exactly the pixels the fixture wrote (its seed is the write order)
            assert np.array_equal(img, image_for(labels[split][name], seed=list(labels[split]).index(name)))
            assert src.size(split, i) == (32, 64)
    assert src.image_path("train", 0) == "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"


def test_cityscapes_labelids_are_converted(tmp_path):
    labels = cityscapes_labels(seed=3)
    write_cityscapes(tmp_path, labels, label_kind="labelIds")
    assert not list(tmp_path.rglob("*labelTrainIds.png"))
    src = open_source(cfg_for("cityscapes", tmp_path))
    for i, name in enumerate(src.names("train")):
        assert np.array_equal(src.label("train", i), labels["train"][name])


def test_cityscapes_without_gtfine_has_no_gt(tmp_path):
    write_cityscapes(tmp_path, cityscapes_labels(), label_kind="none")
    src = open_source(cfg_for("cityscapes", tmp_path))
    assert not src.has_gt("train") and src.label("train", 0) is None
    assert len(src.names("train")) == 3


# --------------------------------------------------------------------------- voc
def test_voc_layout_palette_pngs_read_as_indices(tmp_path):
    labels = voc_labels()
    write_voc(tmp_path, labels)
    # the files really are palette PNGs with 255 borders
    with Image.open(tmp_path / "SegmentationClass" / "2007_000032.png") as im:
        assert im.mode == "P"
    src = open_source(cfg_for("voc", tmp_path))
    assert isinstance(src, VOCSource)
    assert src.classes.num_classes == 21 and src.classes.names[0] == "background"
    assert src.classes.names[20] == "tvmonitor" and src.classes.fill_label == 0
    assert tuple(src.classes.palette[1]) == (128, 0, 0) and tuple(src.classes.palette[15]) == (192, 128, 128)
    assert src.names("train") == sorted(labels["train"])
    for i, name in enumerate(src.names("train")):
        gt = src.label("train", i)
        assert np.array_equal(gt, labels["train"][name])
        assert (gt == VOID).any()
        assert src.image("train", i).shape == (40, 48, 3)  # JPEG decoded as RGB
    assert src.image_path("val", 0) == "JPEGImages/2007_000033.jpg"


def test_voc_devkit_root_and_missing_segmentation_is_no_gt(tmp_path):
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", voc_labels(), with_gt=False)
    src = open_source(cfg_for("voc", tmp_path / "VOCdevkit"))
    assert not src.has_gt("train") and src.label("train", 1) is None
    assert len(src.names("val")) == 2


# --------------------------------------------------------------------------- folder
def test_folder_split_layout(tmp_path):
    labels = {"train": {"site1/a": block_labels(24, 30, [0, 1, 2], seed=1),
                        "b": block_labels(20, 30, [0, 2], seed=2)},
              "val": {"c": block_labels(24, 30, [1, 2], seed=3)}}
    write_folder(tmp_path, labels, ["sky", "ground", "tree"])
    src = open_source(cfg_for("folder", tmp_path))
    assert isinstance(src, FolderSource)
    assert src.classes.names == ("sky", "ground", "tree") and src.classes.convention == "plain"
    assert src.names("train") == ["b", "site1/a"] and src.names("val") == ["c"]
    assert src.size("train", 0) == (20, 30)
    assert np.array_equal(src.label("train", 1), labels["train"]["site1/a"])


def test_folder_flat_without_labels_and_custom_classes_file(tmp_path):
    labels = {"train": {"x": block_labels(16, 16, [0, 1]), "y": block_labels(16, 16, [1])}}
    write_folder(tmp_path, labels, ["a"], with_gt=False, flat=True)
    (tmp_path / "names.txt").write_text("# my classes\nbackground\n\nthing\n")
    src = open_source(cfg_for("folder", tmp_path, classes_file=str(tmp_path / "names.txt")))
    assert src.classes.names == ("background", "thing")
    assert src.names("train") == ["x", "y"] and src.names("val") == []
    assert not src.has_gt("train") and src.label("train", 0) is None


# --------------------------------------------------------------------------- io
def test_size_reads_the_header_only(tmp_path):
    p = save_png(tmp_path / "img.png", image_for(block_labels(64, 80, [0, 1, 2])))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated pixel data, intact header
    from a2lc_cli.data.io import image_size

    assert image_size(p) == (64, 80)
    with pytest.raises(A2LCError, match="img.png"):
        read_rgb(p)


def test_mask_ids_8_and_16_bit(tmp_path):
    ids = np.array([[0, 1, 1], [300, 300, 2]], np.uint16)
    save_png(tmp_path / "m16.png", ids)
    save_png(tmp_path / "m8.png", np.array([[0, 1], [2, 2]], np.uint8))
    assert np.array_equal(read_mask_ids(tmp_path / "m16.png"), ids.astype(np.int32))
    assert read_mask_ids(tmp_path / "m8.png").tolist() == [[0, 1], [2, 2]]


def test_rgb_label_png_is_rejected(tmp_path):
    p = save_png(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(A2LCError, match="rgb.png.*single-channel"):
        read_label_png(p)


@pytest.mark.parametrize("kind", ["cityscapes", "voc", "folder"])
def test_write_label_png_round_trips_through_the_loader(tmp_path, kind):
    """What `a2lc export` will write (corrected labels) reads back identically through the source."""
    if kind == "cityscapes":
        write_cityscapes(tmp_path, cityscapes_labels())
    elif kind == "voc":
        write_voc(tmp_path, voc_labels())
    else:
        write_folder(tmp_path, {"train": {"a": block_labels(16, 24, [0, 1, 2, 3])}}, ["w", "x", "y", "z"])
    src = open_source(cfg_for(kind, tmp_path))
    h, w = src.size("train", 0)
    c = src.classes.num_classes
    corrected = np.random.default_rng(0).integers(0, c, size=(h, w)).astype(np.uint8)
    corrected[:2] = VOID
    path = src.label_path("train", 0)
    before = sorted(p.name for p in path.parent.iterdir())
    write_label_png(path, corrected, src.classes)
    assert sorted(p.name for p in path.parent.iterdir()) == before  # atomic: no temporary left behind
    assert np.array_equal(src.label("train", 0), corrected)
    with Image.open(path) as im:
        if kind == "voc":
            assert im.mode == "P"
            pal = np.array(im.getpalette()[: 256 * 3], np.uint8).reshape(256, 3)
            assert np.array_equal(pal[:21], src.classes.palette)
        else:
            assert im.mode == "L"
            assert np.array_equal(np.asarray(im), corrected)  # plain grey values (trainIds)


def test_init_stores_paths_usable_from_any_directory(tmp_path, cli, monkeypatch):
    from a2lc_cli.config import load_config

    write_folder(tmp_path / "data", {"train": {"a": block_labels(8, 8, [0, 1])}}, ["unused"])
    (tmp_path / "data" / "names.txt").write_text("bg\nfg\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("-w", "ws", "init", "--source", "folder", "--root", "data", "--classes-file", "names.txt")
    assert code == 0, err
    cfg = load_config(tmp_path / "ws" / "config.json")
    assert cfg.source.root == str(tmp_path / "data")  # absolute
    monkeypatch.chdir(tmp_path / "ws")
    assert open_source(cfg).classes.names == ("bg", "fg")  # names.txt found relative to the root
