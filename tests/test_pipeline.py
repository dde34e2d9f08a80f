"""Two rounds on tiny built-in data through the CLI: the separate stage commands, then `round`,
checking the state after each stage; rerunning a finished stage or round changes nothing."""

from __future__ import annotations

import json
import shlex
import math

import numpy as np
import pytest

from a2lc_cli.acquire import read_acquisition
from a2lc_cli.lcm import load_lcm
from a2lc_cli.state import HUMAN, LCM, Dataset, mask_state, read_corrections, read_query

pytestmark = pytest.mark.slow


def ok(cli, *args):
    code, out, err = cli(*args)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    from a2lc_cli.cli import invoke

    ws = tmp_path_factory.mktemp("pipe") / "ws"
    assert invoke(["-q", "-w", str(ws), "init", "--n-train", "16", "--n-val", "6", "--height", "48", "--width", "96",
                   "--set", "train.iterations=30", "--set", "lcm.epochs=20", "--set", "method.budget=40",
                   "--set", "lcm.tau=[0.5, 0.5]"]) == 0
    assert invoke(["-q", "-w", str(ws), "pseudolabel"]) == 0
    assert invoke(["-q", "-w", str(ws), "train", "--r", "0"]) == 0
    return ws


def test_stage_by_stage_round_1(tiny_ws, cli, tmp_path):
    ws = tiny_ws
    with Dataset(ws / "dataset.h5") as ds:
        n_masks = ds.n_masks
        gt_label = ds.mask_column("gt_label")
        label0 = ds.mask_label0.copy()
    assert n_masks > 40

    # acquire: a score and a feature for every mask, nothing excluded in round 1
    res = json.loads(ok(cli, "-q", "-w", ws, "acquire", "--r", "1", "--json"))
    assert res["fn"] == "abc" and res["eligible"] == n_masks
    acq = read_acquisition(ws / "rounds/r001/acquire.h5")
    assert acq["score"].shape == (n_masks,) and np.isfinite(acq["score"]).all() and (acq["score"] >= 0).all()
    np.testing.assert_allclose(acq["mean_prob"].sum(1), 1.0, atol=1e-4)
    assert 0 < acq["attrs"]["meta"]["seconds"]

    # query: the top-40 by score, answered with the GT majority
    res = json.loads(ok(cli, "-q", "-w", ws, "query", "--r", "1", "--json"))
    q = read_query(ws / "rounds/r001/query.h5")
    assert res["selected"] == 40 == len(q.selected)
    assert set(q.selected.tolist()) == set(np.argsort(-acq["score"], kind="stable")[:40].tolist())
    ids, labels = q.answers.effective()
    np.testing.assert_array_equal(labels, gt_label[ids])

    # data mIoU after the query, before the LCM, already works and is not worse than round 0
    r0 = json.loads(ok(cli, "-q", "-w", ws, "evaluate", "--r", "0", "--json"))["miou"]
    r1q = json.loads(ok(cli, "-q", "-w", ws, "evaluate", "--r", "1", "--json"))["miou"]
    assert r1q >= r0

    # lcm-train: ψ learns from this round's non-void answers
    res = json.loads(ok(cli, "-q", "-w", ws, "lcm-train", "--r", "1", "--json"))
    assert res["samples"] == int((labels != 255).sum())
    _, ckpt = load_lcm(ws / "rounds/r001/lcm.pt")
    assert ckpt["answer_counts"] == np.bincount(labels[labels != 255], minlength=19).tolist()

    # lcm-correct: every correction satisfies the four criteria (recomputed from the stored predictions)
    res = json.loads(ok(cli, "-q", "-w", ws, "lcm-correct", "--r", "1", "--json"))
    c = read_corrections(ws / "rounds/r001/lcm.h5")
    meta = c.attrs["meta"]
    with Dataset(ws / "dataset.h5") as ds:
        st = mask_state(ws, ds, 1)
    assert res["corrected"] == len(c.mask)
    assert not np.isin(c.mask, q.selected).any()
    assert (c.confidence >= meta["tau"]).all() and not np.isin(c.label, meta["tail"]).any()
    assert (c.previous != meta["rarest"]).all() and (c.label != c.previous).all()
    np.testing.assert_array_equal(st.label[ids], labels)
    assert (st.source[ids] == HUMAN).all() and (st.source[c.mask] == LCM).all()
    untouched = np.setdiff1d(np.arange(n_masks), np.concatenate([ids, c.mask]))
    np.testing.assert_array_equal(st.label[untouched], label0[untouched])

    # train θ_1 and evaluate; status knows the round is complete
    ok(cli, "-q", "-w", ws, "train", "--r", "1")
    assert (ws / "rounds/r001/model.pt").exists()
    status = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert status["rounds"][1]["stages"] == {"acquire": "done", "query": "done", "lcm-train": "done",
                                             "lcm-correct": "done", "train": "done"}
    assert status["next"] == f"a2lc -w {shlex.quote(str(ws))} acquire --r 2"  # -w: a hint that works when copied

    # rerunning finished stages is a no-op
    before = {p.name: p.read_bytes() for p in (ws / "rounds/r001").iterdir() if p.suffix == ".h5"}
    ok(cli, "-q", "-w", ws, "query", "--r", "1")
    res = json.loads(ok(cli, "-q", "-w", ws, "round", "--r", "1", "--json"))
    assert set(res["stages"].values()) == {"skipped"}
    assert {p.name: p.read_bytes() for p in (ws / "rounds/r001").iterdir() if p.suffix == ".h5"} == before
    for key in ("data_miou", "model_miou", "lcm_corrected"):
        assert key in res["metrics"]


def test_a_rerun_lcm_train_stops_the_old_corrections_until_status_next_brings_them_back(tiny_ws, cli, tmp_path):
    """mask_state folds lcm.h5 in only while the registry's staleness check (the one `status` shows) holds."""
    import shlex
    import shutil

    from a2lc_cli.round_state import mask_state as ws_mask_state
    from a2lc_cli.workspace import Workspace

    if not (tiny_ws / "rounds/r001/model.pt").exists():
        ok(cli, "-q", "-w", tiny_ws, "round", "--r", "1")
    shutil.copytree(tiny_ws, tmp_path / "ws")  # round 2's test keeps the shared workspace
    ws = Workspace(tmp_path / "ws")
    ok(cli, "-q", "-w", ws.root, "config", "set", "lcm.tau=[0.05, 0.05]")  # low enough that ψ_1 relabels masks
    ok(cli, "-q", "-w", ws.root, "lcm-correct", "--r", "1")
    old = read_corrections(ws.path("lcm-correct", 1))
    assert len(old.mask) > 0
    with Dataset(ws.dataset_path) as ds:
        assert (ws_mask_state(ws, ds, 1).source[old.mask] == LCM).all()
        label0 = ds.mask_label0.copy()

        ok(cli, "-q", "-w", ws.root, "lcm-train", "--r", "1")  # ψ_1 again: lcm.h5 is now stale
        status = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
        assert status["rounds"][1]["stages"]["lcm-correct"] == "stale"
        st = ws_mask_state(ws, ds, 1)
        assert (st.source != LCM).all() and (1, "lcm") not in st.rounds_applied
        np.testing.assert_array_equal(st.label[old.mask], label0[old.mask])  # never queried: pseudo-labels again
        with pytest.raises(TypeError):
            ws_mask_state(ws.root, ds, 1)  # a Workspace only

        assert status["next"].startswith("a2lc ")
        ok(cli, "-q", "-w", ws.root, *shlex.split(status["next"])[1:])  # status's suggestion makes it current
        status = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
        assert status["rounds"][1]["stages"]["lcm-correct"] == "done"
        new = read_corrections(ws.path("lcm-correct", 1))
        st = ws_mask_state(ws, ds, 1)
    assert (1, "lcm") in st.rounds_applied and (st.source[new.mask] == LCM).all()
    np.testing.assert_array_equal(st.label[new.mask], new.label)


def test_round_2_with_the_round_command(tiny_ws, cli):
    ws = tiny_ws
    if not (ws / "rounds/r001/model.pt").exists():
        ok(cli, "-q", "-w", ws, "round", "--r", "1")
    res = json.loads(ok(cli, "-q", "-w", ws, "round", "--r", "2", "--json"))
    assert set(res["stages"].values()) == {"ran"}
    q1 = read_query(ws / "rounds/r001/query.h5")
    q2 = read_query(ws / "rounds/r002/query.h5")
    assert not np.isin(q2.selected, q1.selected).any()  # non-redundant correction
    acq2 = read_acquisition(ws / "rounds/r002/acquire.h5")
    assert np.isneginf(acq2["score"][q1.selected]).all()
    c2 = read_corrections(ws / "rounds/r002/lcm.h5")
    assert c2.attrs["meta"]["tau"] == 0.5
    assert not np.isin(c2.mask, np.concatenate([q1.selected, q2.selected])).any()
    acc = json.loads(ok(cli, "-q", "-w", ws, "evaluate", "--metric", "lcm-accuracy", "--r", "2", "--json"))
    assert acc["corrected"] == len(c2.mask)
    if acc["corrected"]:
        assert 0 <= acc["accuracy_before"] <= 100 and 0 <= acc["accuracy_after"] <= 100
    assert math.isfinite(res["metrics"]["data_miou"])
    status = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert set(status["rounds"][2]["stages"].values()) == {"done"}
    # a new θ_1 makes round 2's acquisition, and so everything after it, stale
    import torch

    p = ws / "rounds/r001/model.pt"
    obj = torch.load(p, map_location="cpu", weights_only=True)
    torch.save({**obj, "uid": "retrained"}, p)
    status = json.loads(ok(cli, "-w", ws, "status", "--json"))
    assert status["rounds"][2]["stages"]["acquire"] == "stale"
    assert status["next"] == f"a2lc -w {shlex.quote(str(ws))} round --r 2"
