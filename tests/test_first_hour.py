"""What a new user meets in the first hour (issue 19): copied workspaces, hints that work, honest
counts and summaries, ``--json`` for every command and its errors, a status table that fits 80 columns.

Most tests use the crafted 2-image workspace of ``test_query`` (hand-computed ABC ranking E, B, D, ...).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from a2lc_cli.state import artifact_uid, read_query

from fixtures import block_labels, write_folder, write_pseudolabels
from test_query import B, D, E, _fill, crafted, ws  # noqa: F401 - crafted, ws are fixtures


@pytest.fixture(autouse=True)
def _hints_without_w(request, monkeypatch):
    """The crafted workspace is also $A2LC_WORKSPACE, so the hints the older tests compare word for word carry no
    ``-w`` (a bare ``a2lc`` finds it); the tests of break-test C check the ``-w`` hints without it."""
    if "ws" in request.fixturenames:
        monkeypatch.setenv("A2LC_WORKSPACE", str(request.getfixturevalue("ws").root))


def ok(cli, *args, **options) -> str:
    code, out, err = cli(*args, **options)
    assert code == 0, err
    return out


def _answered_round_1(ws, cli, tmp_path, answers=None):
    """Round 1 acquired, 3 masks selected for people, answered through the bundle."""
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    bundle = tmp_path / "bundle"
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", bundle)
    _fill(bundle / "answers.csv", answers or {E: "c0", B: "c2", D: "void"}, annotator="ann", seconds="5.664")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv")
    return bundle


def _copy_without_metadata(src, dst):
    """``cp -r`` / rsync without ``-t``: new files, new modification times, same bytes."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    later = time.time_ns() + 5 * 10**9
    for folder, _, files in os.walk(dst):
        for name in files:
            os.utime(os.path.join(folder, name), ns=(later, later))


# --------------------------------------------------------------------------- 2: copies stay valid
def test_a_copied_workspace_continues_its_round(ws, cli, tmp_path, stage_inputs):
    _answered_round_1(ws, cli, tmp_path)
    ok(cli, "-q", "-w", ws.root, "lcm-train", "--r", "1", "--epochs", "2")
    ok(cli, "-q", "-w", ws.root, "lcm-correct", "--r", "1")
    copy = tmp_path / "copy"
    _copy_without_metadata(ws.root, copy)
    for name in ("model.pt",):
        assert artifact_uid(copy / "rounds/r000" / name) == artifact_uid(ws.artifact(0, name))
    assert artifact_uid(copy / "rounds/r001/lcm.pt") == artifact_uid(ws.artifact(1, "lcm.pt"))
    st = json.loads(ok(cli, "-w", copy, "status", "--json"))
    r1 = st["rounds"][1]["stages"]
    assert r1 == {"acquire": "done", "query": "done", "lcm-train": "done", "lcm-correct": "done", "train": "missing"}
    assert st["next"] == f"a2lc -w {shlex.quote(str(copy))} train --r 1"  # the copy, named as -w named it
    # continue the round in the copy: nothing before training is redone, people's answers are kept
    acq = (copy / "rounds/r001/acquire.h5").read_bytes()
    real_theta = dataclasses.replace(stage_inputs, model=None)  # the fake images; θ_1 is a real model: evaluate loads it
    ok(cli, "-w", copy, "config", "set", "train.iterations=2")
    res = json.loads(ok(cli, "-q", "-w", copy, "round", "--r", "1", "--json", "--device", "cpu", inputs=real_theta))
    assert res["stages"] == {"acquire": "skipped", "query": "skipped", "lcm-train": "skipped",
                             "lcm-correct": "skipped", "train": "ran"}
    assert (copy / "rounds/r001/acquire.h5").read_bytes() == acq
    assert set(read_query(copy / "rounds/r001/query.h5").answers.annotator.tolist()) == {"ann"}


def test_status_never_suggests_a_round_that_would_meet_peoples_answers(ws, cli, tmp_path):
    _answered_round_1(ws, cli, tmp_path)
    # θ_0 really changes after people answered: round 1's acquisition is stale
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
    assert st["rounds"][1]["stages"]["acquire"] == "stale"
    assert not st["next"].startswith("a2lc round")
    assert "export-answers --r 1" in st["next"] and "move" in st["next"]
    acq = ws.artifact(1, "acquire.h5").read_bytes()
    code, _, err = cli("-w", ws.root, "round", "--r", "1")
    assert code != 0 and "people" in err and "export-answers" in err
    assert ws.artifact(1, "acquire.h5").read_bytes() == acq  # refused before redoing anything
    # the advice works: keep the answers, move query.h5 aside, and the round runs again
    ok(cli, "-w", ws.root, "export-answers", "--r", "1", "--out", tmp_path / "kept.csv")
    ws.artifact(1, "query.h5").rename(tmp_path / "query.h5.old")
    st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
    assert st["next"] == "a2lc round --r 1"


def test_checkpoint_identity_is_its_stored_uid_or_content(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"uid": "u1", "w": torch.zeros(3)}, a)
    shutil.copyfile(a, b)
    assert artifact_uid(a) == artifact_uid(b) == "u1"
    torch.save({"w": torch.zeros(3)}, a)  # no uid: identified by its bytes
    shutil.copyfile(a, b)
    assert artifact_uid(a) == artifact_uid(b) and artifact_uid(a).startswith("sha256:")
    torch.save({"w": torch.ones(3)}, b)
    assert artifact_uid(a) != artifact_uid(b)
    # what older a2lc recorded (size-mtime) still holds for the very same file, in place
    st = a.stat()
    legacy = f"{st.st_size:x}-{st.st_mtime_ns:x}"
    assert artifact_uid(a, recorded=legacy) == legacy
    assert artifact_uid(a, recorded="0-0") == artifact_uid(a)
    assert artifact_uid(tmp_path / "missing.pt") is None


# --------------------------------------------------------------------------- 6: init's hint works
def test_init_for_real_data_names_a_pseudolabel_command_that_works(tmp_path, cli, monkeypatch):
    labels = {"a": block_labels(8, 8, [0, 1]), "b": block_labels(8, 8, [1, 0])}
    write_folder(tmp_path / "data", {"train": labels}, ["bg", "fg"])
    code, out, err = cli("-w", tmp_path / "ws", "init", "--source", "folder", "--root", tmp_path / "data")
    assert code == 0, err
    hint = out.split("next: ", 1)[1].strip()
    assert hint.startswith(f"a2lc -w {shlex.quote(str(tmp_path / 'ws'))} pseudolabel --labeler import --import-dir DIR")
    assert "--labeler grounded-sam --sam-checkpoint FILE --gdino-checkpoint FILE" in hint
    st = json.loads(ok(cli, "-w", tmp_path / "ws", "status", "--json"))
    assert st["next"] == hint
    # the plain command fails; the hinted one, with DIR filled in, works
    assert cli("-w", tmp_path / "ws", "pseudolabel")[0] != 0
    write_pseudolabels(tmp_path / "pl", labels)
    args = shlex.split(hint.split(" (", 1)[0].replace("DIR", str(tmp_path / "pl")))
    assert args[:4] == ["a2lc", "-w", str(tmp_path / "ws"), "pseudolabel"]
    ok(cli, "-q", *args[1:])  # as copied, -w included
    st = json.loads(ok(cli, "-w", tmp_path / "ws", "status", "--json"))
    assert st["dataset"]["images"] == 2 and _bare(st["next"], tmp_path / "ws") == "a2lc train --r 0"
    # a folder config has no synthetic preset (item 14)
    cfg = json.loads(ok(cli, "-w", tmp_path / "ws", "config", "show", "--json"))["config"]
    assert cfg["source"]["preset"] is None
    assert cli("-w", tmp_path / "ws2", "init", "--source", "folder", "--root", tmp_path / "data",
               "--preset", "voc")[0] == 2


# --------------------------------------------------------------------------- 7: who answered
def test_human_query_of_a_simulated_round_is_refused_and_the_summary_says_who_answered(ws, cli, tmp_path):
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    out = ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3")
    assert "3 answered (3 by the simulated annotator)" in out
    before = ws.artifact(1, "query.h5").read_bytes()
    code, out, err = cli("-w", ws.root, "query", "--r", "1", "--annotator", "human", "--export", tmp_path / "b")
    assert code == 2 and "simulated annotator" in err and "--force" in err
    assert not (tmp_path / "b" / "answers.csv").exists()
    assert ws.artifact(1, "query.h5").read_bytes() == before
    res = json.loads(ok(cli, "-w", ws.root, "query", "--r", "1", "--json"))
    assert res["answered_by"] == {"simulated-gt": 3}


# --------------------------------------------------------------------------- 8: README's command
def test_bundle_readme_import_command_works_from_any_folder(ws, cli, tmp_path, monkeypatch):
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    monkeypatch.chdir(tmp_path)
    out = ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", "bundle")
    readme = (tmp_path / "bundle" / "README.txt").read_text()
    line = next(s.strip() for s in readme.splitlines() if s.strip().startswith("a2lc -w"))
    assert str(ws.root.absolute()) in line and str(tmp_path / "bundle" / "answers.csv") in line
    assert line in out  # the CLI prints the same command
    _fill(tmp_path / "bundle" / "answers.csv", {E: "c1"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ok(cli, *shlex.split(line)[1:])
    assert read_query(ws.artifact(1, "query.h5")).answers.mask.tolist() == [E]


# --------------------------------------------------------------------------- 9: a typo in -w
@pytest.mark.parametrize("command", [("status",), ("config", "set", "seed=3"), ("config", "show"), ("round", "--r", "1"),
                                     ("export-answers",), ("evaluate",), ("train", "--r", "0")])
def test_a_missing_workspace_is_named_not_invented(tmp_path, cli, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("-w", "typo", *command)
    assert code == 2 and out == ""
    assert f"workspace {tmp_path / 'typo'} does not exist" in " ".join(err.split())
    assert not (tmp_path / "typo").exists()


def test_init_still_creates_a_workspace(tmp_path, cli):
    ok(cli, "-w", tmp_path / "new", "init", "--n-train", "4")
    assert (tmp_path / "new" / "config.json").exists()


# --------------------------------------------------------------------------- 10: resume when trained
def test_resume_of_a_finished_model_says_it_is_trained(ws, cli):
    before = ws.artifact(0, "model.pt").read_bytes()
    out = ok(cli, "-w", ws.root, "train", "--r", "0", "--resume")
    assert "already trained" in out and "without --resume" in out
    assert json.loads(ok(cli, "-w", ws.root, "train", "--r", "0", "--resume", "--json"))["already_trained"] is True
    assert ws.artifact(0, "model.pt").read_bytes() == before


# --------------------------------------------------------------------------- 11: out-of-order rounds
@pytest.mark.parametrize("command, words", [
    (("query", "--r", "7"), "round 7 needs round 6 first: run `a2lc round --r 1` (then each round up to 6)"),
    (("train", "--r", "3"), "round 3 needs round 2 first: run `a2lc round --r 1` (then each round up to 2)"),
    (("acquire", "--r", "2"), "round 2 needs round 1 first: run `a2lc round --r 1`"),
    (("lcm-train", "--r", "2"), "round 2 needs round 1 first: run `a2lc round --r 1`"),
    (("round", "--r", "2"), "round 2 needs round 1 first: run `a2lc round --r 1`"),
    (("lcm-train", "--r", "1"), "round 1 has no acquire.h5 yet; run `a2lc acquire --r 1` first"),
    (("train", "--r", "1"), "round 1 has no acquire.h5 yet; run `a2lc acquire --r 1` first"),
    (("evaluate", "--r", "3"), "round 3 needs round 2 first: run `a2lc round --r 1` (then each round up to 2)"),
    (("evaluate", "--r", "4", "--metric", "model-miou"), "round 4 needs round 3 first"),
    (("evaluate", "--r", "4", "--metric", "lcm-accuracy"), "round 4 needs round 3 first"),
])
def test_out_of_order_rounds_name_the_round_to_run(ws, cli, command, words):
    code, _, err = cli("-w", ws.root, *command)
    assert code == 2 and words in " ".join(err.split())


def test_the_order_hint_names_a_command_that_runs(ws, cli):
    code, _, err = cli("-w", ws.root, "lcm-correct", "--r", "1")
    assert "run `a2lc acquire --r 1` first" in err
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    code, _, err = cli("-w", ws.root, "lcm-correct", "--r", "1")
    assert "run `a2lc query --r 1` first" in err


# --------------------------------------------------------------------------- 12: report
def test_report_of_one_workspace_has_its_round_0_baseline(ws, cli, tmp_path):
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3")
    res = json.loads(ok(cli, "-q", "-w", ws.root, "report", "--json", "--out", tmp_path / "rep"))
    rounds = next(iter(res["runs"].values()))["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(isinstance(r["data_miou"], float) for r in rounds)  # computed, not "—"
    assert (ws.artifact(0, "metrics-data-miou.json")).exists()
    assert "—" not in (tmp_path / "rep" / "report.md").read_text().split("Data mIoU")[1].splitlines()[0]


def test_report_plot_has_whole_round_ticks_and_a_readable_span():
    import matplotlib.pyplot as plt

    from a2lc_cli.report import miou_figure

    one = {"x": {"rounds": [{"round": 0, "data_miou": 61.0, "model_miou": None}]}}
    fig = miou_figure(one)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_ylim()[1] - ax.get_ylim()[0] >= 5
    # round 0 only, θ_0 not evaluated: the Model mIoU panel says so instead of being an empty frame
    assert len(ax.lines) == 1 and not ax.texts
    assert not fig.axes[1].lines
    assert [t.get_text() for t in fig.axes[1].texts] == [
        "no Model mIoU\n(not evaluated yet:\na2lc evaluate --metric model-miou --r 0)"]
    plt.close(fig)
    fig = miou_figure({"x": {"rounds": [{"round": 0, "data_miou": 61.0, "model_miou": 40.0}]}})
    assert [len(line.get_xdata()) for line in fig.axes[1].lines] == [1] and not fig.axes[1].texts  # the point
    plt.close(fig)
    many = {"x": {"rounds": [{"round": k, "data_miou": 60.0 + k, "model_miou": 40.0 + k} for k in range(6)]}}
    fig = miou_figure(many)
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)
    plt.close(fig)


# --------------------------------------------------------------------------- 13: changes are changes
def test_export_counts_label_changes_not_touched_masks(ws, cli, tmp_path):
    # E keeps its current label c0; B c1 → c2 and D c2 → void are changes
    _answered_round_1(ws, cli, tmp_path, {E: "c0", B: "c2", D: "void"})
    res = json.loads(ok(cli, "-q", "-w", ws.root, "export", tmp_path / "out", "--r", "1", "--json"))
    assert res["changes"] == 2 and res["history_rows"] == 3
    rows = {int(r["mask_id"]): r for r in csv.DictReader(open(tmp_path / "out" / "history.csv"))}
    assert rows[E]["previous"] == rows[E]["label"] == "c0" and rows[E]["changed"] == "0"
    assert rows[B]["changed"] == rows[D]["changed"] == "1"
    out = ok(cli, "-q", "-w", ws.root, "export", tmp_path / "out2", "--r", "1")
    assert "3 rows, 2 label changes" in out


# --------------------------------------------------------------------------- 14: wording
def test_round_summary_never_prints_none():
    from a2lc_cli.commands.round import _metrics_line

    line = _metrics_line({"round": 1, "stages": {"train": "ran"},
                          "metrics": {"data_miou": 50.0, "lcm_corrected": 0, "lcm_accuracy_before": None,
                                      "lcm_accuracy_after": None}})
    assert "None" not in line and "data miou 50.00" in line and "lcm corrected 0" in line


def test_export_answers_seconds_are_the_stored_float32_not_its_widening(ws, cli, tmp_path):
    _answered_round_1(ws, cli, tmp_path)
    rows = list(csv.DictReader(ok(cli, "-w", ws.root, "export-answers").splitlines()))
    assert {r["seconds"] for r in rows} == {"5.664"}
    assert float(np.float32(rows[0]["seconds"])) == float(np.float32(5.664))
    out = ok(cli, "-w", ws.root, "export-answers", "--r", "1", "--current", "--out", tmp_path / "one.csv")
    assert "exported 3 answers" in out


def test_status_names_the_method_by_its_switches(ws, cli):
    out = ok(cli, "-w", ws.root, "status")
    assert "method a2lc (acquisition abc, mask-level query, LCM on)" in " ".join(out.split())
    ok(cli, "-w", ws.root, "config", "set", "method.acquisition=sim", "method.unit=pixel", "method.lcm=false")
    out = " ".join(ok(cli, "-w", ws.root, "status").split())
    assert "method alc (acquisition sim, pixel-level query, LCM off" in out and "method a2lc (" not in out
    ok(cli, "-w", ws.root, "config", "set", "method.lcm=true")
    assert "method custom" in " ".join(ok(cli, "-w", ws.root, "status").split())


# --------------------------------------------------------------------------- 15: --json everywhere
def test_config_show_and_set_speak_json(ws, cli):
    shown = json.loads(ok(cli, "-w", ws.root, "config", "show", "--json"))
    assert shown["config"]["seed"] == 0 and shown["exists"] is True
    res = json.loads(ok(cli, "-w", ws.root, "config", "set", "lcm.alpha=0.3", "method.budget=7", "--json"))
    assert res["changed"] == {"lcm.alpha": 0.3, "method.budget": 7} and res["config"]["lcm"]["alpha"] == 0.3


@pytest.mark.parametrize("command", [("status",), ("query", "--r", "7"), ("config", "set", "nope=1"),
                                     ("evaluate", "--metric", "nope"), ("acquire",)])
def test_errors_under_json_are_one_json_object_with_the_same_exit_code(ws, cli, tmp_path, command):
    target = tmp_path / "missing" if command == ("status",) else ws.root
    plain_code, plain_out, plain_err = cli("-w", target, *command)
    code, out, err = cli("-w", target, *command, "--json")
    assert code == plain_code != 0
    obj = json.loads(out)  # exactly one JSON object on stdout
    assert list(obj) == ["error"] and obj["error"] in " ".join(plain_err.split()).replace("error: ", "", 1)
    assert plain_out == ""


# --------------------------------------------------------------------------- 16: 80 columns, help
def test_status_fits_80_columns_with_a_legend(ws, cli, monkeypatch):
    from a2lc_cli import ui

    monkeypatch.setattr(ui.out, "width", 80)
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    out = ok(cli, "-w", ws.root, "status")
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    for word in ("acquire", "query", "lcm", "train", "correct", "answers", "mIoU"):
        assert word in out
    assert "✓ done" in out and "· missing" in out and "stale" in out


def test_help_shows_no_type_for_plain_flags(cli):
    for command in (("status",), ("train",), ("query",), ()):
        code, out, _ = cli(*command, "--help")
        assert code == 0 and "<bool>" not in out
        assert ("--quiet" if command == () else "--json") in out


# --------------------------------------------------------------------------- 3: progress on lcm-train
def test_lcm_train_shows_steps_and_loss(ws, cli, tmp_path):
    _answered_round_1(ws, cli, tmp_path, {E: "c1", B: "c2", D: "c0"})
    code, out, err = cli("-w", ws.root, "lcm-train", "--r", "1", "--epochs", "5", "--batch-size", "2")
    assert code == 0, err
    assert "lcm-train ψ_1" in err and "10/10" in err  # 3 samples, batch 2: 2 steps per epoch × 5
    assert "loss " in err
    code, out, err = cli("-q", "-w", ws.root, "lcm-train", "--r", "1", "--epochs", "5")
    assert code == 0 and "lcm-train ψ_1" not in err


# --------------------------------------------------------------------------- 1: skipped masks (session side)
def test_next_mask_counts_skipped_masks_and_says_where_the_rest_are(ws, cli):
    from a2lc_cli.serve.session import AnnotationSession

    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human")
    s = AnnotationSession(ws, 1)
    assert s.next_mask("tab1", "Ana", skip=[])["mask"]["mask_id"] == E
    got = s.next_mask("tab2", "Bo", skip=[B, D])  # E is open in tab1; B and D skipped in tab2
    assert got["mask"] is None and got["skipped_left"] == 2
    assert got["message"] == "no mask to show: of the 3 without an answer, 2 skipped here and 1 open in other tabs"
    again = s.next_mask("tab2", "Bo", skip=[])  # the page drops its skip list: they come back in rank order
    assert again["mask"]["mask_id"] == B and again["skipped_left"] == 0


def test_acquire_is_not_redone_under_peoples_answers(ws, cli, tmp_path):
    _answered_round_1(ws, cli, tmp_path)
    before = ws.artifact(1, "acquire.h5").read_bytes()
    code, _, err = cli("-w", ws.root, "acquire", "--r", "1")
    assert code == 2 and "of people" in err and "export-answers --r 1" in err
    assert ws.artifact(1, "acquire.h5").read_bytes() == before
    ok(cli, "-w", ws.root, "query", "--r", "1")  # the round still works


# --------------------------------------------------------------------------- found by a new user (issue 19)
def test_export_without_annotator_is_a_bundle_for_people_never_simulated_answers(ws, cli, tmp_path):
    """`status` hints `query --export DIR`: it must not let the simulator answer first (items 2 and 7)."""
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    out = ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--export", tmp_path / "b")
    assert "answered" in out and "simulated" not in out
    assert read_query(ws.artifact(1, "query.h5")).answers.mask.size == 0
    with open(tmp_path / "b" / "answers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(not (r.get("answer") or "").strip() for r in rows)
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--annotator", "gt", "--export", tmp_path / "c")
    assert code == 2 and "--export" in err and "--annotator gt" in err


def test_init_refuses_the_simulate_labeler_for_real_data(tmp_path, cli):
    labels = {"a": block_labels(8, 8, [0, 1])}
    write_folder(tmp_path / "data", {"train": labels}, ["bg", "fg"])
    code, out, err = cli("-w", tmp_path / "ws", "init", "--source", "folder", "--root", tmp_path / "data",
                         "--labeler", "simulate")
    assert code == 2 and "--labeler import" in err
    assert not (tmp_path / "ws" / "config.json").exists()


def test_one_label_changed_is_singular(ws, cli, tmp_path):
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    bundle = tmp_path / "bundle"
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", bundle)
    _fill(bundle / "answers.csv", {B: "c2"}, annotator="ann")
    out = ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv")
    assert "; 1 label changed;" in " ".join(out.split())


# --------------------------------------------------------------------------- break-test B: a stale round under people's answers
def _snapshot(ws):
    return {p.relative_to(ws.root): p.read_bytes() for p in sorted(ws.root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("answered", [{E: "c0"}, {E: "c0", B: "c2", D: "void"}], ids=["waiting", "complete"])
def test_a_stale_round_under_peoples_answers_has_one_way_out_that_works(ws, cli, tmp_path, answered):
    """θ_0 retrained while people's answers sit in round 1's query.h5: status, and every command of the round,
    name the same way out (no circle), nothing runs on the stale round, and following status's hint works."""
    _answered_round_1(ws, cli, tmp_path, answered)
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
    assert st["rounds"][1]["stages"]["acquire"] == "stale"
    hint = st["next"]
    assert "export-answers --r 1" in hint and "mv " in hint and "a2lc acquire --r 1" in hint
    before = _snapshot(ws)
    for command in (("acquire",), ("query",), ("query", "--annotator", "human", "--export", tmp_path / "x"),
                    ("query", "--answers", tmp_path / "bundle" / "answers.csv"), ("lcm-train", "--epochs", "1"),
                    ("lcm-correct",), ("train",), ("round",)):
        code, _, err = cli("-w", ws.root, command[0], "--r", "1", *command[1:])
        assert code == 2, command
        assert " ".join(err.split()) == f"error: {hint}", command  # one message, the one status gives
    assert _snapshot(ws) == before  # refused before anything was written
    # follow the hint, command by command (the page's --serve is exercised through --export: both only need query.h5)
    commands = [shlex.split(c) for c in re.findall(r"`([^`]+)`", hint) if c.startswith(("a2lc ", "mv "))]
    assert [c[:2] for c in commands] == [["a2lc", "export-answers"], ["mv", str(ws.artifact(1, "query.h5"))],
                                        ["a2lc", "acquire"], ["a2lc", "query"]]
    for c in commands:
        if c[0] == "mv":
            shutil.move(c[1], c[2])
        elif "--serve" in c:
            ok(cli, "-w", ws.root, *c[1:c.index("--serve")], "--annotator", "human", "--export", tmp_path / "new")
        else:
            ok(cli, "-w", ws.root, *[str(tmp_path / "kept.csv") if a == "FILE" else a for a in c[1:]])
    with open(tmp_path / "kept.csv", newline="") as f:
        assert sorted(int(row["mask_id"]) for row in csv.DictReader(f)) == sorted(answered)  # the answers were kept
    assert [p.name for p in (ws.root / "rounds/r001").glob("query.h5.old-*")] == [Path(commands[1][2]).name]
    st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
    assert st["rounds"][1]["stages"]["acquire"] == "done" and st["rounds"][1]["stages"]["query"] == "waiting"
    assert st["next"].startswith("people's answers for round 1: a2lc query --r 1 --serve")


def test_lcm_and_train_refuse_a_stale_acquisition_and_name_the_round(ws, cli, tmp_path):
    """Without people's answers the way out is the round itself (which recomputes the acquisition)."""
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3")  # simulated answers
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    before = _snapshot(ws)
    for command in (("lcm-train", "--epochs", "1"), ("train",)):
        code, _, err = cli("-w", ws.root, command[0], "--r", "1", *command[1:])
        assert code == 2 and "acquisition is stale" in err and "`a2lc round --r 1`" in " ".join(err.split()), command
    assert _snapshot(ws) == before
    assert json.loads(ok(cli, "-w", ws.root, "status", "--json"))["next"] == "a2lc round --r 1"


# --------------------------------------------------------------------------- break-test E: -w must name a workspace
def test_w_must_name_a_workspace_folder(cli, tmp_path):
    data = write_folder(tmp_path / "data", {"train": {"a": block_labels(8, 8, [0, 1])}}, ["bg", "fg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"x")  # hidden files do not make a folder a dataset
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    cases = {
        data: (f"{data} is not an a2lc workspace (it has no config.json, dataset.h5 or rounds/)",
               f"--root {data}"),
        empty: (f"{empty} is an empty folder, not an a2lc workspace yet", f"`a2lc -w {empty} init`"),
        a_file: (f"{a_file} is a file, not a workspace folder", "-w names the folder"),
        tmp_path / "typo": (f"workspace {tmp_path / 'typo'} does not exist", "init"),
    }
    for target, words in cases.items():
        listing = sorted(p.name for p in target.iterdir()) if target.is_dir() else None
        for command in (("status",), ("config", "set", "lcm.alpha=0.3"), ("config", "show"), ("acquire", "--r", "1"),
                        ("status", "--json")):
            code, out, err = cli("-w", target, *command)
            msg = " ".join(err.split())
            assert code == 2 and msg.startswith("error: ") and len(err.strip().splitlines()) == 1, (target, command, err)
            for w in words:
                assert w in msg, (target, command, msg)
            if command[-1] == "--json":
                assert json.loads(out)["error"] == msg[len("error: "):]
            else:
                assert out == ""
        # nothing was written: a random folder never becomes a workspace
        assert (sorted(p.name for p in target.iterdir()) if target.is_dir() else None) == listing
    # the hint for the empty folder works
    ok(cli, "-w", empty, "init")
    assert _bare(json.loads(ok(cli, "-w", empty, "status", "--json"))["next"], empty) == "a2lc pseudolabel"


# --------------------------------------------------------------------------- break-test F: the widest cells at 80 columns
def test_status_with_the_widest_cells_fits_80_columns(ws, cli, tmp_path):
    """`stale` and `waiting` cells and a 100.00 mIoU, printed by the real CLI with COLUMNS=80: nothing cut."""
    import subprocess
    import sys

    _answered_round_1(ws, cli, tmp_path, {E: "c0"})  # round 1's query waits for 2 more answers
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    for r in (0, 1):
        for metric in ("data-miou", "model-miou"):
            ws.artifact(r, f"metrics-{metric}.json").write_text(json.dumps({"miou": 100.0}))
    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    res = subprocess.run([sys.executable, "-m", "a2lc_cli", "-w", str(ws.root), "status"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "…" not in res.stdout
    # every line fits, but the `next:` hint, kept on one line so that it copies whole
    assert max(len(line) for line in lines if not line.startswith("next: ")) <= 80
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["round"])
    assert lines[header].split() == ["round", "acquire", "query", "train", "correct", "train", "answers", "mIoU", "mIoU"]
    row1 = next(line.split() for line in lines[header + 1:] if line.split()[:1] == ["1"])
    assert row1 == ["1", "stale", "waiting", "·", "·", "·", "1", "100.00", "100.00"]


def test_status_hints_lead_a_peoples_round_through_a_retrained_model(ws, cli, tmp_path):
    """A bundle went out, nobody answered yet, and θ_0 was retrained: each hint of status, followed as
    given, works, and the round stays a round for people (never `a2lc round`, whose simulated annotator
    would answer it)."""
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", tmp_path / "b0")
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    seen = []
    for step in range(4):
        st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
        hint = st["next"]
        seen.append(hint)
        assert "a2lc round" not in hint, seen
        command = shlex.split(hint.split(": ")[-1].split(" (")[0])
        if command[:2] == ["a2lc", "query"]:  # --serve needs a person at a browser: the bundle is the same selection
            assert "--serve" in command
            command = [a for a in command if a != "--serve"] + ["--annotator", "human", "--export", str(tmp_path / "b1")]
            ok(cli, "-w", ws.root, *command[1:])
            break
        ok(cli, "-w", ws.root, *command[1:])
    assert seen[0] == "a2lc acquire --r 1" and seen[1].startswith("people's answers for round 1 (a new selection)")
    with open(tmp_path / "b1" / "answers.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(read_query(ws.artifact(1, "query.h5")).selected) >= 1
    _fill(tmp_path / "b1" / "answers.csv", {m: "c0" for m in read_query(ws.artifact(1, "query.h5")).selected.tolist()},
          annotator="ann")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", tmp_path / "b1" / "answers.csv")
    st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
    assert st["rounds"][1]["stages"]["query"] == "done" and st["next"] == "a2lc lcm-train --r 1"


# --------------------------------------------------------------------------- b19 review: hints that work
def test_the_order_hint_never_sends_a_round_waiting_for_people_to_the_simulator(ws, cli, tmp_path):
    """`a2lc round --r 1` on a selection made for people would let the simulated annotator answer the
    masks people have not answered yet: the order hint names people's step first, as status does."""
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    bundle = tmp_path / "bundle"
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", bundle)
    _fill(bundle / "answers.csv", {E: "c0"}, annotator="ann", seconds="2")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv")
    code, _, err = cli("-w", ws.root, "query", "--r", "3")
    err = " ".join(err.split())
    assert code == 2 and "round 3 needs round 2 first: round 1 waits for people's answers" in err, err
    assert "`a2lc query --r 1 --serve`" in err and "run `a2lc round --r 1`" not in err



# --------------------------------------------------------------------------- break-test C: hints that work when copied
def _bare(text, root):
    """``text`` without the ``-w ROOT`` that hints carry for a workspace given with -w (for comparing words)."""
    return text.replace(f"a2lc -w {shlex.quote(str(root))} ", "a2lc ")


def test_localise_adds_the_workspace_to_commands_only(monkeypatch, tmp_path):
    from a2lc_cli import hints
    from a2lc_cli.cli import app

    monkeypatch.delenv("A2LC_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert names == set(hints.COMMANDS)  # every command of the CLI is recognised in a hint
    try:
        hints.set_workspace(Path("my ws"))
        assert hints.localise("next: a2lc round --r 2") == "next: a2lc -w 'my ws' round --r 2"
        assert hints.localise("a2lc export-answers --r 1 (or a2lc query --r 1 --serve)") == \
            "a2lc -w 'my ws' export-answers --r 1 (or a2lc -w 'my ws' query --r 1 --serve)"
        text = "which a2lc never overwrites; `a2lc -w other init`; see a2lc_cli.rounds"
        assert hints.localise(text) == text
        hints.set_workspace(Path("a2lc-work"), "default")  # the workspace a bare `a2lc` finds: no -w
        assert hints.localise("`a2lc train --r 0`") == "`a2lc train --r 0`"
        monkeypatch.setenv("A2LC_WORKSPACE", str(tmp_path / "elsewhere"))
        hints.set_workspace(tmp_path / "elsewhere", "A2LC_WORKSPACE")
        assert hints.localise("`a2lc train --r 0`") == "`a2lc train --r 0`"
    finally:
        hints.reset()


def test_every_hint_names_the_workspace_and_works_when_copied(ws, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("A2LC_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)  # not the folder of the workspace: a hint without -w would fail
    root = shlex.quote(str(ws.root))
    st = json.loads(ok(cli, "-w", ws.root, "status", "--json"))
    assert st["next"] == f"a2lc -w {root} acquire --r 1"
    assert ok(cli, "-w", ws.root, "status").strip().splitlines()[-1] == f"next: a2lc -w {root} acquire --r 1"
    code, _, err = cli("-w", ws.root, "train", "--r", "3")  # an order hint, raised deep in the library
    assert code == 2 and f"`a2lc -w {root} round --r 1`" in " ".join(err.split()), err
    code, out, _ = cli("-w", ws.root, "train", "--r", "3", "--json")  # the same words in the JSON error
    assert f"`a2lc -w {root} round --r 1`" in json.loads(out)["error"]
    command = shlex.split(st["next"])  # copy the hint as it stands and run it
    ok(cli, *command[1:])
    assert ws.artifact(1, "acquire.h5").exists()
    # the default workspace, or the one A2LC_WORKSPACE names, needs no -w
    monkeypatch.setenv("A2LC_WORKSPACE", str(ws.root))
    assert json.loads(ok(cli, "status", "--json"))["next"] == "a2lc query --r 1"
    monkeypatch.delenv("A2LC_WORKSPACE")
    shutil.copytree(ws.root, tmp_path / "a2lc-work")
    assert json.loads(ok(cli, "status", "--json"))["next"] == "a2lc query --r 1"


def test_a_missing_default_workspace_says_how_it_was_chosen(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("A2LC_WORKSPACE", raising=False)
    code, _, err = cli("status")
    assert code == 2 and "no -w was given" in err and "check -w" not in err
    monkeypatch.setenv("A2LC_WORKSPACE", str(tmp_path / "typo"))
    code, _, err = cli("status")
    assert code == 2 and "A2LC_WORKSPACE" in err and "check -w" not in err
    code, _, err = cli("-w", tmp_path / "typo2", "status")
    assert code == 2 and "check -w" in err


def test_w_inside_a_workspace_names_the_workspace(ws, cli):
    for inner in (ws.root / "rounds", ws.root / "rounds" / "r000"):
        code, _, err = cli("-w", inner, "status")
        line = " ".join(err.split())
        assert code == 2 and f"inside the a2lc workspace {ws.root}" in line and "--root" not in line, line


# --------------------------------------------------------------------------- break-test C: a round for people
def test_round_never_fills_a_round_selected_for_people_with_simulated_answers(ws, cli, tmp_path):
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", tmp_path / "b")
    before = _snapshot(ws)
    code, _, err = cli("-w", ws.root, "round", "--r", "1")
    line = _bare(" ".join(err.split()), ws.root)
    assert code == 4 and len(err.strip().splitlines()) == 1, err
    assert "selected for people" in line and "`a2lc query --r 1 --serve`" in line and "--simulated-answers" in line
    assert _snapshot(ws) == before


def test_round_on_top_of_a_stale_round_under_peoples_answers_is_refused_as_the_others_are(ws, cli, tmp_path):
    _answered_round_1(ws, cli, tmp_path)
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "theta1"}, ws.artifact(1, "model.pt"))
    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "retrained"}, ws.artifact(0, "model.pt"))
    before = _snapshot(ws)
    errors = set()
    for command in (("round", "--r", "2"), ("acquire", "--r", "2")):
        code, _, err = cli("-w", ws.root, *command)
        assert code == 2, (command, err)
        errors.add(" ".join(err.split()))
    assert len(errors) == 1, errors  # one rule, one message: round 1's way out
    assert "export-answers --r 1" in errors.pop()
    assert _snapshot(ws) == before


# --------------------------------------------------------------------------- break-test C: no silent retraining
def test_train_of_a_current_model_says_so_and_guards_the_next_rounds_answers(ws, cli, tmp_path):
    _answered_round_1(ws, cli, tmp_path)
    uid = artifact_uid(ws.artifact(0, "model.pt"))
    out = ok(cli, "-w", ws.root, "train", "--r", "0")
    assert "round 0's model is up to date" in out and "--force" in out
    assert json.loads(ok(cli, "-w", ws.root, "train", "--r", "0", "--json"))["up_to_date"] is True
    code, _, err = cli("-w", ws.root, "train", "--r", "0", "--force")
    line = _bare(" ".join(err.split()), ws.root)
    assert code == 2 and "3 answers of people" in line and "round 1's acquisition stale" in line, line
    assert "`a2lc export-answers --r 1 --out FILE`" in line and "--stale-next-round" in line
    assert artifact_uid(ws.artifact(0, "model.pt")) == uid  # nothing retrained


# --------------------------------------------------------------------------- break-test C: SIGTERM is Ctrl-C everywhere
def test_sigterm_stops_any_command_like_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys

    script = ("import time, typer\n"
              "from a2lc_cli import cli\n"
              "@cli.app.command('sleepy')\n"
              "def sleepy(ctx: typer.Context):\n"
              "    from a2lc_cli.commands._common import workspace\n"
              "    ws = workspace(ctx, must_exist=False)\n"
              "    ws.root.mkdir(exist_ok=True)\n"
              "    with ws.lock():\n"
              "        print('locked', flush=True)\n"
              "        time.sleep(60)\n"
              "raise SystemExit(cli.invoke(['-w', %r, 'sleepy']))\n" % str(tmp_path / "w"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    assert p.stdout.readline().strip() == "locked"
    assert (tmp_path / "w" / ".lock").exists()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert not (tmp_path / "w" / ".lock").exists()  # the lock was released


def test_importing_an_answers_file_with_no_answers_says_so(ws, cli, tmp_path):
    ok(cli, "-w", ws.root, "acquire", "--r", "1")
    bundle = tmp_path / "bundle"
    ok(cli, "-w", ws.root, "query", "--r", "1", "--budget", "3", "--annotator", "human", "--export", bundle)
    out = ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv")  # nothing filled in
    assert "imported 0 new" in out and "had no answers filled in" in " ".join(out.split())
    res = json.loads(ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv", "--json"))
    assert res["file_answers"] == 0 and res["imported"] == 0
    _fill(bundle / "answers.csv", {E: "c0"}, annotator="ann")
    out = ok(cli, "-w", ws.root, "query", "--r", "1", "--answers", bundle / "answers.csv")
    assert "imported 1 new" in out and "no answers" not in out
