"""`a2lc export` writes the corrected labels in the dataset's own convention; they load back
through the same loaders, and history.csv records every change."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np

from a2lc_cli.annotator import new_answers
from a2lc_cli.config import Config
from a2lc_cli.data import open_source
from a2lc_cli.state import Dataset, Query, mask_state, paint_labels, write_query
from a2lc_cli.stages import QUERY, current_inputs
from a2lc_cli.workspace import Workspace
from fixtures import cityscapes_labels, voc_labels, write_cityscapes, write_pseudolabels, write_voc


def _answer_first_mask(ws: Workspace, label: int) -> int:
    """Round 1 with one human answer: the first mask of image 0 gets ``label``."""
    write_query(ws.artifact(1, "query.h5"), Query(np.array([0]), np.array([1.0], np.float32),
                new_answers(np.array([0]), np.array([label]), unit="mask", annotator="tester"), {}),
                inputs=current_inputs(ws, QUERY, 1), meta={})  # current by the registry's check
    return 0


def _reload(cfg_root, kind: str):
    cfg = Config()
    cfg.source.kind = kind
    cfg.source.root = str(cfg_root)
    return open_source(cfg)


def _roundtrip(tmp_path, cli, kind, root, pseudo_dir, label_dir_name, new_label):
    ws = Workspace(tmp_path / "ws")
    assert cli("-w", ws.root, "init", "--source", kind, "--root", root)[0] == 0
    code, _, err = cli("-w", ws.root, "pseudolabel", "--labeler", "import", "--import-dir", pseudo_dir)
    assert code == 0, err
    m = _answer_first_mask(ws, new_label)
    out = tmp_path / "out"
    code, stdout, err = cli("-w", ws.root, "export", out, "--r", "1", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["masks"]["human"] == 1 and res["changes"] == 1
    # a copy of the dataset whose train labels are replaced by the export
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.copytree(out / label_dir_name, copy / label_dir_name, dirs_exist_ok=True)
    src = _reload(copy, kind)
    with Dataset(ws.dataset_path) as ds:
        st = mask_state(ws, ds, 1)
        assert ds.names == src.names("train")
        for i in range(ds.n_images):
            np.testing.assert_array_equal(src.label("train", i), paint_labels(ds, i, st))
        assert (src.label("train", 0)[ds.segment(0) == m] == new_label).all()
        name0 = ds.names[0]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 1 and rows[0]["mask_id"] == str(m) and rows[0]["source"] == "human"
    assert rows[0]["round"] == "1" and rows[0]["image"] == name0 and rows[0]["annotator"] == "tester"
    return ws, out


def test_cityscapes_export_round_trips(tmp_path, cli):
    labels = cityscapes_labels()
    root = write_cityscapes(tmp_path / "cityscapes", labels)
    pseudo = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    ws, out = _roundtrip(tmp_path, cli, "cityscapes", root, pseudo, "gtFine", new_label=18)
    assert (out / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png").exists()


def test_voc_export_round_trips_as_palette_pngs(tmp_path, cli):
    from PIL import Image

    labels = voc_labels()
    root = write_voc(tmp_path / "voc", labels)
    pseudo = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    ws, out = _roundtrip(tmp_path, cli, "voc", root, pseudo, "SegmentationClass", new_label=7)
    png = next((out / "SegmentationClass").glob("*.png"))
    assert Image.open(png).mode == "P"


def test_export_refuses_rounds_without_answers_and_the_state_folder(tmp_path, cli):
    labels = cityscapes_labels()
    root = write_cityscapes(tmp_path / "cityscapes", labels)
    pseudo = write_pseudolabels(tmp_path / "pseudo", labels["train"])
    ws = tmp_path / "ws"
    assert cli("-w", ws, "init", "--source", "cityscapes", "--root", root)[0] == 0
    assert cli("-w", ws, "pseudolabel", "--labeler", "import", "--import-dir", pseudo)[0] == 0
    code, _, err = cli("-w", ws, "export", tmp_path / "o", "--r", "2")  # the shared round check's words: what to run first
    assert code != 0 and "round 2 needs round 1 first: run `a2lc -w" in err
    code, _, err = cli("-w", ws, "export", ws / "rounds")
    assert code != 0 and "refusing" in err
    assert cli("-w", ws, "export", tmp_path / "o0")[0] == 0  # latest round with labels: 0
