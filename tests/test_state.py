"""The HDF5 state: dataset writer (overlap compaction, mask table, resume), painting, round composition."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from a2lc_cli.data.base import ClassInfo, default_palette
from a2lc_cli.errors import A2LCError
from a2lc_cli.labelers.base import paint_masks
from a2lc_cli.state import (
    Dataset,
    DatasetWriter,
    ImageProposal,
    Query,
    initial_state,
    mask_majority,
    mask_state,
    paint_labels,
    read_query,
    write_artifact,
    write_query,
)
from a2lc_cli.annotator import new_answers
from a2lc_cli.stages import QUERY, current_inputs
from a2lc_cli.workspace import Workspace

CLASSES = ClassInfo(("a", "b", "c"), default_palette(3), 255)


def _writer(path, sizes, **kw):
    return DatasetWriter(path, classes=CLASSES, names=[f"i{k}" for k in range(len(sizes))], paths=[""] * len(sizes),
                         sizes=sizes, has_gt=True, meta={"t": 1}, **kw)


def test_mask_majority_void_does_not_vote():
    seg = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    lab = np.array([1, 1, 255, 2, 255, 255, 0, 255], np.uint8)
    maj, votes, void = mask_majority(seg, lab, 3)
    assert maj.tolist() == [1, 255, 255]  # mask 1 is mostly void; mask 2 all void
    assert votes.tolist() == [2, 1, 0] and void.tolist() == [1, 2, 1]


def test_paint_masks_smaller_on_top():
    big = np.zeros((4, 4), bool)
    big[:, :] = True
    small = np.zeros((4, 4), bool)
    small[1:3, 1:3] = True
    seg, lab = paint_masks(np.stack([small, big]), np.array([2, 0]), fill_label=255)
    assert (seg[1:3, 1:3] == 0).all() and seg[0, 0] == 1
    assert lab[1, 1] == 2 and lab[0, 0] == 0
    seg, lab = paint_masks(np.zeros((0, 2, 2), bool), np.zeros(0), fill_label=7)
    assert (seg == -1).all() and (lab == 7).all()


def test_writer_compacts_empty_masks_and_builds_the_mask_table(tmp_path):
    p = tmp_path / "dataset.h5"
    w = _writer(p, [(2, 3), (1, 2)])
    # local mask 1 has no pixels (lost to overlap resolution): ids are renumbered densely
    seg = np.array([[0, 0, 2], [2, 2, -1]], np.int32)
    lab = np.array([[1, 1, 0], [0, 2, 255]], np.uint8)
    gt = np.array([[1, 255, 0], [0, 0, 2]], np.uint8)
    assert w.add_image(0, ImageProposal(seg, lab, score=np.array([0.9, 0.5, 0.3]), prompt=np.array([1, 2, 0])), gt) == 2
    w.add_image(1, ImageProposal(np.array([[0, 0]], np.int32), np.array([[2, 2]], np.uint8)), np.array([[2, 1]], np.uint8))
    w.finish()
    with Dataset(p) as ds:
        assert ds.n_images == 2 and ds.n_masks == 3
        assert ds.mask_offset.tolist() == [0, 2, 3]
        np.testing.assert_array_equal(ds.segment(0), [[0, 0, 1], [1, 1, -1]])
        np.testing.assert_array_equal(ds.segment(1), [[2, 2]])
        assert ds.mask_area.tolist() == [2, 3, 2]
        assert ds.mask_label0.tolist() == [1, 0, 2]  # majority of round-0 pixels
        assert ds.mask_column("bbox").tolist() == [[0, 0, 2, 1], [0, 0, 3, 2], [0, 0, 2, 1]]
        np.testing.assert_allclose(ds.mask_column("score"), [0.9, 0.3, np.nan])
        assert ds.mask_column("prompt").tolist() == [1, 0, -1]
        assert ds.mask_column("gt_label").tolist() == [1, 0, 1]  # mask 2: tie 2/1 → smaller class
        np.testing.assert_allclose(ds.mask_column("gt_purity"), [1.0, 1.0, 0.5])
        np.testing.assert_array_equal(ds.gt(0), gt)


def test_writer_resumes_a_partial_file(tmp_path):
    p = tmp_path / "dataset.h5"
    img = ImageProposal(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.uint8))
    w = _writer(p, [(2, 2)] * 3)
    w.add_image(0, img, np.zeros((2, 2), np.uint8))
    w.checkpoint()
    w.close()  # interrupted after one image
    assert not p.exists()
    w = _writer(p, [(2, 2)] * 3)
    assert w.images_done == 1 and w.n_masks == 1
    w.add_image(1, img, np.zeros((2, 2), np.uint8))
    w.add_image(2, img, np.zeros((2, 2), np.uint8))
    w.finish()
    with Dataset(p) as ds:
        assert ds.n_masks == 3 and ds.mask_image.tolist() == [0, 1, 2]
    # a partial file of other options is not resumed
    w = DatasetWriter(p, classes=CLASSES, names=["x"], paths=[""], sizes=[(2, 2)], has_gt=False, meta={"t": 2})
    assert w.images_done == 0
    w.close()


def test_open_rejects_foreign_and_damaged_files(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(A2LCError, match="not an a2lc dataset file"):
        Dataset(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(A2LCError, match="not a readable HDF5"):
        Dataset(garbage)
    with pytest.raises(A2LCError, match="does not exist"):
        Dataset(tmp_path / "missing.h5")


def test_write_artifact_is_atomic(tmp_path):
    p = tmp_path / "a.h5"
    with write_artifact(p, "acquire") as f:
        f["v"] = 1
    before = p.read_bytes()
    with pytest.raises(RuntimeError):
        with write_artifact(p, "acquire") as f:
            f["v"] = 2
            raise RuntimeError("killed mid-write")
    assert p.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir()] == ["a.h5"]  # no temporary left behind


def test_round_state_composes_answers_then_lcm_and_paints(tmp_path):
    ws = Workspace(tmp_path)
    w = _writer(ws.dataset_path, [(2, 2)])
    w.add_image(0, ImageProposal(np.array([[0, 1], [2, -1]], np.int32), np.array([[0, 1], [2, 255]], np.uint8)),
                np.array([[1, 1], [2, 2]], np.uint8))
    w.finish()
    with Dataset(ws.dataset_path) as ds:
        # round 1: mask 0 answered 1 (human)
        write_query(ws.artifact(1, "query.h5"), Query(np.array([0]), np.array([1.0], np.float32),
                    new_answers(np.array([0]), np.array([1]), unit="mask", annotator="x"), {}),
                    inputs=current_inputs(ws, QUERY, 1), meta={})  # current: mask_state folds it in
        q1 = read_query(ws.artifact(1, "query.h5"))
        # round 1 LCM: mask 1 → 0
        with write_artifact(ws.artifact(1, "lcm.h5"), "lcm", inputs={"query": q1.attrs["uid"]}) as f:
            g = f.create_group("corrected")
            g["mask"], g["label"], g["previous"], g["confidence"] = [1], np.array([0], np.uint8), np.array([1], np.uint8), [0.995]
        st = mask_state(ws, ds, 1)
        assert st.label.tolist() == [1, 0, 2] and st.source.tolist() == [1, 2, 0]
        assert st.queried.tolist() == [True, False, False]
        assert st.rounds_applied == [(1, "query"), (1, "lcm")]
        np.testing.assert_array_equal(paint_labels(ds, 0, st), [[1, 0], [2, 255]])
        assert mask_state(ws, ds, 1, include_lcm_of_last=False).label.tolist() == [1, 1, 2]
        np.testing.assert_array_equal(paint_labels(ds, 0, initial_state(ds)), [[0, 1], [2, 255]])
        # a later query of round 1 makes its old lcm.h5 stale: it is no longer applied
        write_query(ws.artifact(1, "query.h5"), Query(np.array([0]), np.array([1.0], np.float32),
                    new_answers(np.array([0]), np.array([2]), unit="mask", annotator="x"), {}),
                    inputs=current_inputs(ws, QUERY, 1), meta={})
        st = mask_state(ws, ds, 1)
        assert st.label.tolist() == [2, 1, 2] and st.rounds_applied == [(1, "query")]
        # a query.h5 the registry calls stale (it records no dataset: `status` says stale) ends the chain
        write_query(ws.artifact(1, "query.h5"), Query(np.array([0]), np.array([1.0], np.float32),
                    new_answers(np.array([0]), np.array([2]), unit="mask", annotator="x"), {}), inputs={}, meta={})
        assert mask_state(ws, ds, 1).rounds_applied == []


def test_answer_log_checksum_detects_damage(tmp_path):
    p = tmp_path / "query.h5"
    write_query(p, Query(np.array([3]), np.array([1.0], np.float32),
                         new_answers(np.array([3]), np.array([1]), unit="mask", annotator="x"), {}), inputs={}, meta={})
    with h5py.File(p, "r+") as f:
        f["answers/label"][0] = 2
    with pytest.raises(A2LCError, match="checksum"):
        read_query(p)


def test_train_stage_state_reads_inputs_from_the_model_file(tmp_path):
    """θ_r records its inputs inside model.pt (one atomic write): a kill before train.json is written
    leaves the stage done, and a model of other labels is stale even when train.json says otherwise."""
    from support import write_workspace

    from a2lc_cli.config import Config
    from a2lc_cli.models import build_model
    from a2lc_cli.rounds import DONE, STALE, stage_state
    from a2lc_cli.stages import TRAIN
    from a2lc_cli.state import Dataset
    from a2lc_cli.training import round_inputs, save_model

    seg = np.array([[0, 0, 1, 1]], np.int32)
    ws, _ = write_workspace(tmp_path / "ws", num_classes=2, segments=[seg], labels0=[np.array([[0, 0, 1, 1]], np.uint8)],
                            gts=[np.array([[0, 0, 1, 1]], np.uint8)])
    with Dataset(ws.dataset_path) as ds:
        inputs = round_inputs(ws, ds, 0)
    names = ["c0", "c1"]
    save_model(ws.artifact(0, "model.pt"), build_model("tiny", 2), model_name="tiny", class_names=names, round=0,
               inputs=inputs)
    assert not ws.artifact(0, "train.json").exists()
    assert stage_state(ws, Config(), 0, TRAIN) == DONE
    ws.artifact(0, "train.json").write_text(json.dumps({"inputs": inputs}))
    save_model(ws.artifact(0, "model.pt"), build_model("tiny", 2), model_name="tiny", class_names=names, round=0,
               inputs={**inputs, "dataset": "another dataset"})
    assert stage_state(ws, Config(), 0, TRAIN) == STALE
    ws.artifact(0, "model.pt").write_bytes(b"\x80damaged")
    assert stage_state(ws, Config(), 0, TRAIN) == STALE
