"""LCM with nothing to learn from (issue 18 review, items 6 and 8): all answers void, or all of one class.

Under both selections the round goes on: ``lcm-train`` records why ψ was not trained, ``lcm-correct`` writes a
valid ``lcm.h5`` with no corrections and that reason, ``evaluate --metric lcm-accuracy`` and ``status`` say it,
and θ is retrained on the answers. A ψ trained on answers of a single class would relabel every mask into it
(with the guards off the calibrated bound even "supports" that): it is refused the same way."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from a2lc_cli.integrity import artifact_damage
from a2lc_cli.lcm import nothing_to_learn
from a2lc_cli.state import read_corrections, read_query
from support import crafted_workspace


def _case(n_images: int = 4):
    """n 8×8 images of four 4×4 masks each, pseudo-labels all c0, GT mixed, a model that is unsure everywhere."""
    seg = np.kron(np.arange(4, dtype=np.int32).reshape(2, 2), np.ones((4, 4), np.int32))
    lab = np.zeros((8, 8), np.uint8)
    rng = np.random.default_rng(0)
    gts = [np.kron(rng.integers(0, 3, (2, 2)).astype(np.uint8), np.ones((4, 4), np.uint8)) for _ in range(n_images)]
    probs = []
    for i in range(n_images):
        p = rng.dirichlet(np.ones(3), size=(2, 2)).transpose(2, 0, 1)
        probs.append(np.kron(p, np.ones((1, 4, 4))))
    return [seg] * n_images, [lab] * n_images, gts, probs


@pytest.fixture
def crafted(tmp_path):
    return crafted_workspace(tmp_path / "ws", *_case())


def _answer_all(cli, ws, tmp_path, answer: str, budget: int = 12):
    run = lambda *a: cli("-q", "-w", ws.root, *a)  # noqa: E731
    assert run("acquire", "--r", 1)[0] == 0
    assert run("query", "--r", 1, "--annotator", "human", "--budget", budget)[0] == 0
    sel = read_query(ws.artifact(1, "query.h5")).selected.tolist()
    path = tmp_path / "answers.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mask_id", "answer", "annotator", "seconds"])
        w.writerows([[m, answer, "ana", 1.0] for m in sel])
    code, _, err = run("query", "--r", 1, "--answers", path)
    assert code == 0, err


def test_nothing_to_learn_reasons():
    names = ["a", "b", "c"]
    assert "no non-void answers" in nothing_to_learn(np.zeros(0, np.int64), names)
    assert "one class (b)" in nothing_to_learn(np.full(40, 1), names)
    assert "lcm.folds = 5" in nothing_to_learn(np.array([0, 1, 2, 0]), names, folds=5)
    assert nothing_to_learn(np.array([0, 1, 2, 0]), names) is None  # the paper's ψ needs no folds
    assert nothing_to_learn(np.array([0, 1, 2, 0, 1]), names, folds=5) is None


@pytest.mark.parametrize("method", ["a2lc", "a2lc+"])
@pytest.mark.parametrize("answer, needle", [("void", "no non-void answers"), ("c1", "one class (c1)")])
def test_the_round_goes_on_and_says_why_nothing_was_corrected(crafted, cli, tmp_path, method, answer, needle):
    ws = crafted[0]
    run = lambda *a: cli("-w", ws.root, *a)  # noqa: E731
    sets = [f"method.preset={method}", "train.iterations=2", "lcm.epochs=5"]
    if answer != "void":  # the guards off: only the one-class refusal stands between ψ and relabelling everything
        sets += ["lcm.require_model_agreement=false", "lcm.reweight=none"] if method == "a2lc+" else ["lcm.tau=[0,0,0,0,0]"]
    assert run("-q", "config", "set", *sets)[0] == 0
    _answer_all(cli, ws, tmp_path, answer)
    code, out, err = run("lcm-train", "--r", 1)
    assert code == 0, err
    assert "ψ not trained" in out and needle in " ".join(out.split())
    code, out, err = run("lcm-correct", "--r", 1)  # text mode, both selections
    assert code == 0, err
    assert "0 of" in out and needle in " ".join(out.split())
    path = ws.artifact(1, "lcm.h5")
    assert artifact_damage(path, "lcm", n_masks=16, num_classes=3) is None  # a valid lcm.h5
    c = read_corrections(path)
    assert len(c.mask) == 0 and needle in c.attrs["meta"]["reason"]
    acc = json.loads(run("-q", "evaluate", "--metric", "lcm-accuracy", "--r", 1, "--json")[1])
    assert acc["corrected"] == 0 and needle in acc["reason"]
    code, out, _ = run("evaluate", "--metric", "lcm-accuracy", "--r", 1)  # text mode
    assert code == 0 and "lcm-accuracy" in out
    code, out, _ = run("status")
    flat = " ".join(out.split())
    assert code == 0 and "LCM: 0 corrections in 1 round (ψ not trained in round 1:" in flat and needle in flat
    st = json.loads(run("-q", "status", "--json")[1])
    assert st["lcm"]["reasons"] == {"1": c.attrs["meta"]["reason"]}
    code, out, err = run("round", "--r", 1)  # the round goes on: θ_1 is trained on the answers
    assert code == 0, err
    assert ws.artifact(1, "model.pt").exists()
