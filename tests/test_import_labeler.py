"""The ``import`` labeler, and end-to-end runs per real source:
``a2lc init --source S --root R`` → ``a2lc pseudolabel --labeler import --import-dir D`` → ``a2lc evaluate --json``,
with the expected numbers computed by hand from the fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from a2lc_cli.config import parse_config
from a2lc_cli.data import open_source
from a2lc_cli.data.base import VOID, default_palette
from a2lc_cli.errors import A2LCError
from a2lc_cli.labelers import make_labeler
from a2lc_cli.labelers.imported import label_components
from a2lc_cli.state import Dataset
from fixtures import write_cityscapes, write_folder, write_mask_ids, write_pseudolabels, write_voc

SKY, ROAD, SIDEWALK, BUILDING, CAR = 10, 0, 1, 2, 13
A, B = "aachen/aachen_000000_000019", "bochum/bochum_000000_000313"


def cityscapes_case():
    """Two 32x64 train images; pseudo-labels equal GT except known regions.

    A: GT sky rows 0-15, road rows 16-31; pseudo says sidewalk on rows 16-23 x cols 0-15 (128 px).
    B: GT row 0 void, building cols 0-31, car cols 32-63; pseudo says building on row 0 (GT void:
       not scored) and 255 on rows 30-31 x cols 32-63 (64 car pixels unlabeled).
    """
    ga = np.full((32, 64), SKY, np.uint8)
    ga[16:] = ROAD
    gb = np.full((32, 64), BUILDING, np.uint8)
    gb[:, 32:] = CAR
    gb[0] = VOID
    pa = ga.copy()
    pa[16:24, :16] = SIDEWALK
    pb = gb.copy()
    pb[0] = BUILDING
    pb[30:, 32:] = VOID
    gt = {"train": {A: ga, B: gb}, "val": {"frankfurt/frankfurt_000000_000294": ga[::-1].copy()}}
    return gt, {A: pa, B: pb}


def run_ok(cli, *args):
    code, out, err = cli(*args)
    assert code == 0, err
    return out


def test_cityscapes_end_to_end(tmp_path, cli):
    gt, pseudo = cityscapes_case()
    root = write_cityscapes(tmp_path / "cityscapes", gt)
    imp = write_pseudolabels(tmp_path / "pseudo", pseudo)
    ws = tmp_path / "ws"
    run_ok(cli, "-w", ws, "init", "--source", "cityscapes", "--root", root)
    out = run_ok(cli, "-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp, "--json")
    assert json.loads(out)["masks"] == 5  # A: sky, road, sidewalk; B: building (+row 0), car
    res = json.loads(run_ok(cli, "-w", ws, "evaluate", "--metric", "data-miou", "--json"))
    assert res["metric"] == "data-miou" and res["round"] == 0
    pc = res["per_class"]
    assert pc["road"] == pytest.approx(87.5)  # 896 / (896 + 128)
    assert pc["sidewalk"] == 0.0
    assert pc["sky"] == pc["building"] == pc["car"] == 100.0
    assert pc["person"] is None  # absent from GT and labels
    assert res["miou"] == pytest.approx(77.5)  # (87.5 + 0 + 100 + 100 + 100) / 5
    assert res["coverage"] == pytest.approx(100 * 3968 / 4032, abs=1e-4)
    assert res["pixel_accuracy"] == pytest.approx(100 * 3840 / 3968, abs=1e-4)
    res = json.loads(run_ok(cli, "-w", ws, "evaluate", "--unlabeled", "error", "--json"))
    assert res["per_class"]["car"] == pytest.approx(100 * 928 / 992, abs=1e-4)
    assert res["miou"] == pytest.approx((87.5 + 0 + 100 + 100 + 100 * 928 / 992) / 5, abs=1e-4)

    with Dataset(ws / "dataset.h5") as ds:
        assert ds.names == [A, B]
        assert ds.classes.convention == "cityscapes" and ds.fill_label == VOID
        assert sorted(ds.mask_area.tolist()) == [128, 896, 928, 1024, 1056]
        assert np.array_equal(ds.label0(0), pseudo[A]) and np.array_equal(ds.gt(1), gt["train"][B])
        seg = ds.segment(1)
        assert (seg[30:, 32:] == -1).all() and (seg[:30] >= 0).all()  # 255 pseudo pixels are no unit
        lab = ds.mask_label0[ds.masks_of(1)]
        assert sorted(lab.tolist()) == [BUILDING, CAR]


def voc_case():
    """Two 24x24 VOC train images with palette-PNG GT.

    I1: background, aeroplane rows 5-10 x cols 5-10 (36 px) inside a 1-px void ring (28 px).
    I2: background, person rows 2-9 x cols 12-19 (64 px), dog rows 14-21 x cols 2-9 (64 px).
    Pseudo-labels: the ring is background (void in GT: not scored); the dog is called a cat.
    """
    g1 = np.zeros((24, 24), np.uint8)
    g1[4:12, 4:12] = VOID
    g1[5:11, 5:11] = 1
    g2 = np.zeros((24, 24), np.uint8)
    g2[2:10, 12:20] = 15
    g2[14:22, 2:10] = 12
    p1 = np.where(g1 == VOID, 0, g1).astype(np.uint8)
    p2 = g2.copy()
    p2[p2 == 12] = 8
    gt = {"train": {"2007_000032": g1, "2007_000039": g2}, "val": {"2007_000033": g2.copy()}}
    return gt, {"2007_000032": p1, "2007_000039": p2}


def test_voc_end_to_end_with_palette_pseudolabels_and_mask_ids(tmp_path, cli):
    gt, pseudo = voc_case()
    root = write_voc(tmp_path / "VOC2012", gt)
    imp = write_pseudolabels(tmp_path / "pseudo", pseudo, palette=default_palette(21))  # palette PNGs
    m1 = np.ones((24, 24), np.uint16)
    m1[4:12, 4:12] = 1000  # the object with its ring
    m2 = np.zeros((24, 24), np.uint16)  # background: no mask
    m2[2:10, 12:20] = 3
    m2[14:22, 2:10] = 300
    masks = write_mask_ids(tmp_path / "masks", {"2007_000032": m1, "2007_000039": m2}, bits=16)
    ws = tmp_path / "ws"
    run_ok(cli, "-w", ws, "init", "--source", "voc", "--root", root)
    out = run_ok(cli, "-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp, "--mask-dir", masks, "--json")
    assert json.loads(out)["masks"] == 4
    res = json.loads(run_ok(cli, "-w", ws, "evaluate", "--json"))
    pc = res["per_class"]
    assert pc["background"] == pc["aeroplane"] == pc["person"] == 100.0
    assert pc["dog"] == 0.0 and pc["cat"] == 0.0 and pc["bird"] is None
    assert res["miou"] == pytest.approx(60.0)  # (100 + 100 + 0 + 0 + 100) / 5
    assert res["coverage"] == pytest.approx(100.0)
    assert res["pixel_accuracy"] == pytest.approx(100 * 1060 / 1124, abs=1e-4)
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.classes.convention == "voc" and ds.fill_label == 0
        assert ds.mask_area.tolist() == [512, 64, 64, 64]  # image 1: bg, object; image 2: person, dog
        assert ds.mask_label0.tolist() == [0, 1, 15, 8]  # majority of the imported labels
        assert ds.mask_column("gt_label").tolist() == [0, 1, 15, 12]  # the dog mask really is a dog
        assert (ds.segment(1)[(m2 == 0)] == -1).all()
        assert np.array_equal(ds.label0(1), pseudo["2007_000039"])  # uncovered pixels keep their label


def test_folder_end_to_end(tmp_path, cli):
    g = np.zeros((16, 16), np.uint8)
    g[:, 8:] = 1
    g[8:, 8:] = 2
    p = g.copy()
    p[8:, 8:] = 1
    root = write_folder(tmp_path / "data", {"train": {"scene/one": g}}, ["floor", "wall", "door"], flat=True)
    imp = write_pseudolabels(tmp_path / "pseudo", {"scene/one": p})  # subfolder, like the name
    ws = tmp_path / "ws"
    run_ok(cli, "-w", ws, "init", "--source", "folder", "--root", root)
    run_ok(cli, "-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp)
    res = json.loads(run_ok(cli, "-w", ws, "evaluate", "--json"))
    assert res["per_class"] == {"floor": 100.0, "wall": 50.0, "door": 0.0}
    assert res["miou"] == pytest.approx(50.0)


def test_folder_without_ground_truth(tmp_path, cli):
    g = np.zeros((8, 8), np.uint8)
    root = write_folder(tmp_path / "data", {"train": {"x": g}}, ["a", "b"], with_gt=False)
    imp = write_pseudolabels(tmp_path / "pseudo", {"x": g})
    ws = tmp_path / "ws"
    run_ok(cli, "-w", ws, "init", "--source", "folder", "--root", root)
    run_ok(cli, "-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", imp)
    with Dataset(ws / "dataset.h5") as ds:
        assert not ds.has_gt and ds.n_masks == 1
    code, _, err = cli("-w", ws, "evaluate", "--json")
    assert code != 0 and "ground truth" in err


def test_label_components_hand_case():
    lab = np.array(
        [[0, 0, 1, 1],
         [0, 255, 1, 0],
         [2, 2, 255, 0],
         [1, 2, 0, 0]], np.uint8)
    seg = label_components(lab)
    assert (seg[lab == VOID] == -1).all()
    # class 0: two components (top-left; right-bottom, diagonal to nothing of class 0 on the left)
    comps = {c: len(np.unique(seg[lab == c])) for c in (0, 1, 2)}
    assert comps == {0: 2, 1: 2, 2: 1}
    assert seg.max() == 4  # 5 components, numbered densely
    # pixels in one component share an id, different components differ
    assert seg[0, 0] == seg[1, 0] and seg[0, 0] != seg[1, 3]
    assert seg[0, 2] == seg[1, 2] and seg[0, 2] != seg[3, 0]


def test_label_components_8_connectivity():
    lab = np.array([[1, 0], [0, 1]], np.uint8)
    seg = label_components(lab)
    assert seg[0, 0] == seg[1, 1] and seg[0, 1] == seg[1, 0] and seg[0, 0] != seg[0, 1]


def _labeler(tmp_path, pseudo: dict, *, masks: dict | None = None, mask_bits=16):
    gt, _ = cityscapes_case()
    root = write_cityscapes(tmp_path / "cs", gt)
    imp = write_pseudolabels(tmp_path / "pseudo", pseudo)
    pl = {"labeler": "import", "import_dir": str(imp)}
    if masks is not None:
        pl["mask_dir"] = str(write_mask_ids(tmp_path / "masks", masks, bits=mask_bits))
    cfg = parse_config({"source": {"kind": "cityscapes", "root": str(root)}, "pseudolabel": pl})
    src = open_source(cfg)
    return make_labeler("import", cfg, src), src


def test_check_requires_every_png_before_any_image(tmp_path):
    _, pseudo = cityscapes_case()
    lab, _ = _labeler(tmp_path, {A: pseudo[A]})
    with pytest.raises(A2LCError, match=r"bochum_000000_000313\.png: pseudo-label missing"):
        lab.check()


def test_check_requires_mask_pngs_and_matching_sizes(tmp_path):
    _, pseudo = cityscapes_case()
    lab, _ = _labeler(tmp_path, pseudo, masks={A: np.ones((32, 64), np.uint16)})
    with pytest.raises(A2LCError, match="mask-id PNG missing"):
        lab.check()
    lab, _ = _labeler(tmp_path / "2", {A: pseudo[A], B: pseudo[B][:, :60]})
    with pytest.raises(A2LCError, match=r"bochum_000000_000313\.png: is 60x32 but its image"):
        lab.check()


def test_propose_rejects_a_label_value_beyond_the_classes(tmp_path):
    _, pseudo = cityscapes_case()
    bad = pseudo[B].copy()
    bad[5, 5] = 19
    lab, src = _labeler(tmp_path, {A: pseudo[A], B: bad})
    lab.check()
    with pytest.raises(A2LCError, match=r"bochum_000000_000313\.png: label value 19 is not a class"):
        lab.propose(1, src.image("train", 1), None)


def test_propose_with_8bit_mask_ids_ignores_gt(tmp_path):
    _, pseudo = cityscapes_case()
    ids = np.zeros((32, 64), np.uint8)
    ids[:16] = 1
    ids[16:] = 2
    lab, src = _labeler(tmp_path, pseudo, masks={A: ids, B: ids}, mask_bits=8)
    lab.check()
    p = lab.propose(0, src.image("train", 0), None)
    assert np.array_equal(p.label0, pseudo[A])
    assert np.array_equal(p.segment, ids.astype(np.int32) - 1)
    q = lab.propose(0, src.image("train", 0), np.zeros((32, 64), np.uint8))
    assert np.array_equal(p.segment, q.segment) and np.array_equal(p.label0, q.label0)
