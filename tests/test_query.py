"""Acquire + query end to end on a crafted 2-image workspace whose ABC ranking is worked out by hand.

Classes c0, c1, c2. Image 0 (8×8): A = rows 0–4 (40 px, label c0), B = rows 5–6 × cols 0–1
(4 px, label c1), C = the rest of rows 5–7 (20 px, label c0). Image 1 (8×8): D = rows 0–1 ×
cols 0–1 (4 px, label c2), E = rows 0–6 except D (52 px, label c0), row 7 uncovered (fill 255).

Model softmax: A (0.8,0.1,0.1); B (0.1,0.3,0.6); C: 8 px at rows 5–6 × cols 2–5 (0.2,0.7,0.1),
the other 12 px (0.7,0.2,0.1); D (0.2,0.2,0.6); E (0.55,0.4,0.05).

Label counts over the masks (Eq. 7–8): c0 = 40+20+52 = 112, c1 = 4, c2 = 4.
KL = 0.9333·ln 2.8 + 2·0.0333·ln 0.1 = 0.8075; w_c0 = (4/112)^(KL³) = 0.1730, w_c1 = w_c2 = 1.
Per-mask Σ cos·a_CIL (Eq. 12 without w):
  A 40·0.2 = 8;  B 4·0.7 = 2.8;  D 4·0.4 = 1.6;  E 52·0.45 = 23.4;
  C: m' = the 12 px predicting c0, f(m') = (0.7,0.2,0.1); the 8 others have
     cos = 0.29/0.54 = 0.5370 → 12·0.3 + 8·0.8·0.5370 = 7.037.
ABC (× w of the label): E 4.048, B 2.8, D 1.6, A 1.384, C 1.217 → ranking E, B, D, A, C.
SIM: E 23.4, A 8, C 7.037, B 2.8, D 1.6 → ranking E, A, C, B, D.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from a2lc_cli.acquire import read_acquisition
from a2lc_cli.state import Dataset, mask_state, read_query

from support import crafted_workspace, touch_model

A, B, C, D, E = 0, 1, 2, 3, 4  # global mask ids (image 0 first, local ids in painting order)


def _case():
    seg0 = np.full((8, 8), -1, np.int32)
    seg0[0:5] = A
    seg0[5:8] = C
    seg0[5:7, 0:2] = B
    lab0 = np.choose(seg0, [0, 1, 0]).astype(np.uint8)
    gt0 = np.zeros((8, 8), np.uint8)
    gt0[5:7, 0:2] = 2  # B is really c2 ...
    gt0[5, 0] = 1  # ... except its first (representative) pixel
    gt0[5, 6] = 2  # C's representative pixel is wrong; C's majority is c0
    seg1 = np.full((8, 8), -1, np.int32)
    seg1[0:7] = 1  # E (local id 1)
    seg1[0:2, 0:2] = 0  # D (local id 0)
    lab1 = np.where(seg1 == 0, 2, np.where(seg1 == 1, 0, 255)).astype(np.uint8)
    gt1 = np.zeros((8, 8), np.uint8)
    gt1[0:7, 2:8] = 1  # E is mostly c1 (42 of 52 px)
    gt1[0:2, 0:2] = 255  # D is mostly void ...
    gt1[1, 1] = 2  # ... with one c2 pixel
    p0 = np.zeros((3, 8, 8))
    p0[:, 0:5] = np.array([0.8, 0.1, 0.1])[:, None, None]
    p0[:, 5:8] = np.array([0.7, 0.2, 0.1])[:, None, None]
    p0[:, 5:7, 2:6] = np.array([0.2, 0.7, 0.1])[:, None, None]
    p0[:, 5:7, 0:2] = np.array([0.1, 0.3, 0.6])[:, None, None]
    p1 = np.zeros((3, 8, 8))
    p1[:] = np.array([0.55, 0.4, 0.05])[:, None, None]
    p1[:, 0:2, 0:2] = np.array([0.2, 0.2, 0.6])[:, None, None]
    return [seg0, seg1], [lab0, lab1], [gt0, gt1], [p0, p1]


@pytest.fixture
def crafted(tmp_path):
    """The crafted workspace with θ_0 in place, and the fakes its stages are given (the ``cli`` fixture passes them)."""
    return crafted_workspace(tmp_path / "ws", *_case())


@pytest.fixture
def ws(crafted):
    return crafted[0]


def _reference_scores(fn: str) -> np.ndarray:
    """Eq. 7–12 pixel by pixel, straight from the paper (no vectorisation)."""
    segs, labs, _, probs = _case()
    pixels = []  # (mask, label, prob vector)
    for i, (seg, lab, p) in enumerate(zip(segs, labs, probs)):
        offset = 0 if i == 0 else 3
        for y in range(8):
            for x in range(8):
                if seg[y, x] >= 0:
                    pixels.append((offset + seg[y, x], int(lab[y, x]), p[:, y, x]))
    counts = np.zeros(3)
    for _, lab, _ in pixels:
        counts[lab] += 1
    prob = counts / counts.sum()
    kl = sum(q * np.log(q * 3) for q in prob if q > 0)
    w = (counts.min() / counts) ** (kl**3) if fn == "abc" else np.ones(3)
    scores = np.zeros(5)
    for m in range(5):
        px = [(lab, p) for mm, lab, p in pixels if mm == m]
        preds = [int(np.argmax(p)) for _, p in px]
        dom = max(set(preds), key=preds.count)
        f = np.mean([p for (_, p), c in zip(px, preds) if c == dom], axis=0)
        for lab, p in px:
            cos = p @ f / np.linalg.norm(p) / np.linalg.norm(f)
            scores[m] += cos * w[lab] * (1 - p[lab])
    return scores


@pytest.mark.parametrize("fn, ranking, hand", [
    ("abc", [E, B, D, A, C], {E: 4.048, B: 2.8, D: 1.6, A: 1.384, C: 1.217}),
    ("sim", [E, A, C, B, D], {E: 23.4, A: 8.0, C: 7.037, B: 2.8, D: 1.6}),
])
def test_acquire_ranking_matches_the_paper(ws, cli, fn, ranking, hand):
    code, out, err = cli("-w", ws.root, "acquire", "--r", "1", "--fn", fn, "--json")
    assert code == 0, err
    acq = read_acquisition(ws.artifact(1, "acquire.h5"))
    np.testing.assert_allclose(acq["score"], _reference_scores(fn), rtol=1e-5)
    for m, v in hand.items():
        assert acq["score"][m] == pytest.approx(v, abs=2e-3)
    assert list(np.argsort(-acq["score"])) == ranking
    # LCM features: mean softmax over each mask (Eq. 1)
    np.testing.assert_allclose(acq["mean_prob"][A], [0.8, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(acq["mean_prob"][C], (12 * np.array([0.7, 0.2, 0.1]) + 8 * np.array([0.2, 0.7, 0.1])) / 20, atol=1e-6)
    # representative pixels (flat index within the image): first pixel of m′ in raster order
    assert acq["rep_pixel"][C] == 5 * 8 + 6 and acq["rep_pixel"][B] == 5 * 8 + 0 and acq["rep_pixel"][E] == 2
    assert json.loads(out)["eligible"] == 5


def test_query_top_b_with_mask_level_answers(ws, cli):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0  # a2lc preset: ABC
    code, out, err = cli("-w", ws.root, "query", "--r", "1", "--budget", "2", "--json")
    assert code == 0, err
    q = read_query(ws.artifact(1, "query.h5"))
    assert q.selected.tolist() == [E, B]
    ids, labels = q.answers.effective()
    assert dict(zip(ids.tolist(), labels.tolist())) == {E: 1, B: 2}  # GT majorities
    summary = json.loads(out)
    assert summary["answered"] == 2 and summary["changed"] == 2 and summary["remaining_unqueried"] == 3
    # the labels after round 1 (before any LCM) are what data mIoU sees
    code, out, _ = cli("-w", ws.root, "evaluate", "--r", "1", "--json")
    assert code == 0
    after = json.loads(out)["miou"]
    code, out, _ = cli("-w", ws.root, "evaluate", "--r", "0", "--json")
    assert after > json.loads(out)["miou"]
    # rerunning the same query is a no-op
    before = ws.artifact(1, "query.h5").read_bytes()
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "2")[0] == 0
    assert ws.artifact(1, "query.h5").read_bytes() == before


def test_mask_level_and_pixel_level_answers_differ_where_masks_are_mixed(ws, cli, tmp_path):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "all", "--unit", "mask")[0] == 0
    mask_level = dict(zip(*[a.tolist() for a in read_query(ws.artifact(1, "query.h5")).answers.effective()]))
    # majority GT, void not voting; D is mostly void → void
    assert mask_level == {A: 0, B: 2, C: 0, D: 255, E: 1}
    ws.artifact(1, "query.h5").unlink()
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "all", "--unit", "pixel")[0] == 0
    q = read_query(ws.artifact(1, "query.h5"))
    pixel_level = dict(zip(*[a.tolist() for a in q.answers.effective()]))
    # GT at the representative pixel, expanded to the whole mask — except C: 19 of its 20 pixels already
    # carry their GT class (c0), so the authors' ALC rule (relabel only when at most half is right) keeps it
    assert pixel_level == {A: 0, B: 1, C: 0, D: 255, E: 1}
    assert set(q.answers.unit.tolist()) == {1}
    # without the rule, C takes its (wrong) representative pixel's class
    ws.artifact(1, "query.h5").unlink()
    assert cli("-w", ws.root, "config", "set", "method.pixel_relabel=always")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "all", "--unit", "pixel")[0] == 0
    always = dict(zip(*[a.tolist() for a in read_query(ws.artifact(1, "query.h5")).answers.effective()]))
    assert always == {A: 0, B: 1, C: 2, D: 255, E: 1}


def test_alc_rule_in_round_2_reads_the_labels_after_round_1(ws, cli):
    """The authors' ALC rule (relabel only when at most half of the mask carries its current label) must
    judge the label a mask has *now*. Round 1 queries E and LCM corrects B from c1 to c2 (B's GT: 3 of
    its 4 pixels c2, its representative pixel c1). In round 2, B's current label c2 is right on 3 of 4
    pixels: B keeps c2. Judged by its round-0 label c1 (right on 1 of 4) it would be relabelled with its
    representative pixel's class, c1."""
    from a2lc_cli.stages import LCM_CORRECT, current_inputs
    from a2lc_cli.state import write_corrections

    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "1", "--unit", "pixel")[0] == 0
    assert read_query(ws.artifact(1, "query.h5")).selected.tolist() == [E]
    pred = np.array([0, 2, 0, 2, 1])  # ψ's class of every mask; only B is corrected
    with write_corrections(ws.artifact(1, "lcm.h5"), inputs=current_inputs(ws, LCM_CORRECT, 1), meta={},
                           pred=pred, log_confidence=np.zeros(5), previous=np.array([0, 1, 0, 2, 0]),
                           ids=np.array([B]), eligible=np.ones(5, bool)):
        pass
    with Dataset(ws.dataset_path) as ds:
        assert mask_state(ws, ds, 1).label[[A, B, C, D]].tolist() == [0, 2, 0, 2]  # the correction is applied
    touch_model(ws, 1)
    assert cli("-w", ws.root, "acquire", "--r", "2")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "2", "--budget", "all", "--unit", "pixel")[0] == 0
    q = read_query(ws.artifact(2, "query.h5"))
    answers = dict(zip(*[a.tolist() for a in q.answers.effective()]))
    assert answers == {A: 0, B: 2, C: 0, D: 255}


def test_budget_larger_than_what_is_left(ws, cli):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--budget", "6")
    assert code != 0 and "larger than the 5 masks left" in err and len(err.strip().splitlines()) == 1
    assert not ws.artifact(1, "query.h5").exists()
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "2")[0] == 0
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--budget", "3")
    assert code != 0 and "already selected 2" in err


def test_next_round_excludes_queried_masks(ws, cli):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "2")[0] == 0
    touch_model(ws, 1)
    assert cli("-w", ws.root, "acquire", "--r", "2")[0] == 0
    acq = read_acquisition(ws.artifact(2, "acquire.h5"))
    assert np.isneginf(acq["score"][[E, B]]).all()
    assert np.isfinite(acq["score"][[A, C, D]]).all()
    # class counts now cover the unqueried masks only: c0 = A + C, c1 = 0, c2 = D
    assert acq["label_counts"].tolist() == [60, 0, 4]
    code, _, err = cli("-w", ws.root, "query", "--r", "2", "--budget", "4")
    assert code != 0 and "3 masks left" in err
    assert cli("-w", ws.root, "query", "--r", "2", "--budget", "all")[0] == 0
    with Dataset(ws.dataset_path) as ds:
        st = mask_state(ws, ds, 2)
    assert st.queried.all() and (st.source == 1).all()


def test_stale_acquisition_is_refused(ws, cli):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    import torch

    # θ_0 retrained after the acquisition: a new file (its identity is its stored uid, not its time)
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--budget", "2")
    assert code != 0 and "stale" in err


# --------------------------------------------------------------------------- people
def _fill(path, answers: dict[int, str], **extra_cols):
    rows = list(csv.DictReader(open(path)))
    for row in rows:
        m = int(row["mask_id"])
        if m in answers:
            row["answer"] = answers[m]
            row.update(extra_cols)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


def test_human_bundle_round_trip(ws, cli, tmp_path):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    bundle = tmp_path / "bundle"
    code, out, err = cli("-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", bundle)
    assert code == 0, err
    q = read_query(ws.artifact(1, "query.h5"))
    assert q.selected.tolist() == [E, B, D] and len(q.answers) == 0
    rows = list(csv.DictReader(open(bundle / "answers.csv")))
    assert [int(r["mask_id"]) for r in rows] == [E, B, D]
    assert rows[0]["candidates"].split(" | ")[0] == "c0" and rows[0]["current_label"] == "c0"
    for r in rows:
        assert (bundle / f"masks/{int(r['rank']):05d}_m{r['mask_id']}_crop.png").stat().st_size > 0
        assert (bundle / f"masks/{int(r['rank']):05d}_m{r['mask_id']}_full.png").stat().st_size > 0
    assert json.loads((bundle / "answers.json").read_text())["masks"][1]["mask_id"] == B
    # a person answers two of the three masks (one by class index)
    _fill(bundle / "answers.csv", {E: "c1", B: "2"}, annotator="ann", seconds="3.5")
    code, out, err = cli("-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv", "--json")
    assert code == 0, err
    assert json.loads(out)["imported"] == 2
    q = read_query(ws.artifact(1, "query.h5"))
    assert dict(zip(*[a.tolist() for a in q.answers.effective()])) == {E: 1, B: 2}
    assert set(q.answers.annotator.tolist()) == {"ann"} and np.allclose(q.answers.seconds, 3.5)
    # importing the same file twice changes nothing
    before = ws.artifact(1, "query.h5").read_bytes()
    code, out, _ = cli("-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv", "--json")
    assert code == 0 and json.loads(out)["imported"] == 0 and json.loads(out)["unchanged"] == 2
    assert ws.artifact(1, "query.h5").read_bytes() == before
    # a contradicting answer is reported, not stored ...
    _fill(bundle / "answers.csv", {E: "c0", D: "void"})
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv")
    assert code != 0 and "contradict" in err and f"mask {E}" in err
    assert ws.artifact(1, "query.h5").read_bytes() == before
    # ... unless --replace: appended, the old answer stays in the log
    code, out, err = cli("-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv", "--replace", "--json")
    assert code == 0, err
    q = read_query(ws.artifact(1, "query.h5"))
    assert len(q.answers) == 4 and q.answers.label.tolist()[:2] == [1, 2]
    assert dict(zip(*[a.tolist() for a in q.answers.effective()])) == {E: 0, B: 2, D: 255}


@pytest.mark.parametrize("rows, message", [
    ([{"mask_id": "99", "answer": "c0"}], "mask 99 was not queried"),
    ([{"mask_id": str(E), "answer": "car"}], "unknown class name 'car'"),
    ([{"mask_id": str(E), "answer": "7"}], "class index 7 is not a class"),
    ([{"mask_id": "x", "answer": "c0"}], "is not an integer"),
    ([{"mask_id": str(E), "answer": "c0"}, {"mask_id": str(E), "answer": "c1"}], "answered twice differently"),
    ([{"mask_id": str(E), "answer": "c0", "seconds": "-1"}], "non-negative"),
])
def test_bad_answer_rows_are_rejected_whole(ws, cli, tmp_path, rows, message):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human")[0] == 0
    before = ws.artifact(1, "query.h5").read_bytes()
    path = tmp_path / "answers.csv"
    good = [{"mask_id": str(B), "answer": "c2"}]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mask_id", "answer", "seconds"])
        w.writeheader()
        w.writerows(good + rows)
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--answers", path)
    assert code != 0 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert ws.artifact(1, "query.h5").read_bytes() == before  # nothing imported, not even the good row


def test_json_answers_file(ws, cli, tmp_path):
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    assert cli("-w", ws.root, "query", "--r", "1", "--budget", "2", "--annotator", "human")[0] == 0
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"mask_id": E, "answer": "c1", "annotator": "x"}, {"mask_id": B, "answer": None}]))
    code, out, err = cli("-w", ws.root, "query", "--r", "1", "--answers", path, "--json")
    assert code == 0, err and json.loads(out)["imported"] == 1
    path.write_text("{not json")
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--answers", path)
    assert code != 0 and "not valid JSON" in err


def test_round_stops_for_people_and_waits(ws, cli):
    """With a human annotator, `round` runs acquire and selects the masks, then stops (exit 4) naming the
    ways to answer; rerunning it before any answer arrives changes nothing."""
    assert cli("-w", ws.root, "config", "set", "method.annotator=human", "method.budget=2")[0] == 0
    code, _, err = cli("-w", ws.root, "round", "--r", "1")
    assert code == 4 and "Traceback" not in err
    assert "--serve" in err and "--answers FILE" in err and "--export DIR" in err
    q = read_query(ws.artifact(1, "query.h5"))
    assert sorted(q.selected.tolist()) == sorted([E, B])  # ABC's top 2, worked out in the module docstring
    assert len(q.answers.effective()[0]) == 0
    assert not ws.artifact(1, "lcm.pt").exists()
    before = ws.artifact(1, "query.h5").read_bytes()
    code, _, err = cli("-w", ws.root, "round", "--r", "1")
    assert code == 4 and ws.artifact(1, "query.h5").read_bytes() == before


def test_answer_seconds_are_parsed_strictly():
    from a2lc_cli.annotator import parse_seconds
    from a2lc_cli.errors import A2LCError

    assert parse_seconds("5.664") == 5.664 and parse_seconds(" 7 ") == 7.0 and parse_seconds(3) == 3.0
    assert parse_seconds("1e2") == 100.0 and parse_seconds(".5") == 0.5
    assert np.isnan(parse_seconds("")) and np.isnan(parse_seconds(None))
    for bad in ("1_0", "nan", "inf", "\u0663", "-1", "1e999", True, float("nan"), 86401, "5 s"):
        with pytest.raises(A2LCError):
            parse_seconds(bad)
