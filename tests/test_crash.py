"""Crash safety (issue 8): each stage of the real CLI, run as a subprocess, is killed with SIGKILL
part-way at a deterministic point (``A2LC_CRASH_AT``, a2lc_cli/faults.py). Then:

- the workspace is still valid: every artifact opens with a2lc's own readers, ``a2lc status --json``
  is exactly what it was before the killed command, and no artifact changed (only hidden progress
  files, the dead writer's lock and temporaries, and ``model.ckpt`` may appear);
- rerunning the same command finishes the job, clears the stale lock, does only the work left
  (counted with ``A2LC_TRACE``), and gives bitwise the same artifacts and status as an
  uninterrupted run (all maths single-threaded on the CPU with fixed seeds).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from crashkit import (
    assert_killed,
    assert_readable,
    assert_same_arrays,
    assert_same_state_dict,
    copy_workspace,
    file_hashes,
    h5_arrays,
    run_a2lc,
    status_json,
    trace_counts,
)

SIZE = ("--n-train", 12, "--n-val", 4, "--height", 48, "--width", 96)
SETTINGS = ("train.iterations=12", "train.checkpoint_every=4", "train.threads=1", "train.batch_size=8",
            "lcm.epochs=6", "lcm.lr=0.01", "lcm.tau=[0.5]")
PSEUDO = ("pseudolabel", "--checkpoint-every", 4)
TRAIN0 = ("train", "--r", 0, "--device", "cpu", "--resume")
ACQUIRE = ("acquire", "--r", 1, "--device", "cpu", "--batch-size", 2, "--checkpoint-every", 4)
LCM_TRAIN = ("lcm-train", "--r", 1)
LCM_CORRECT = ("lcm-correct", "--r", 1)
PROGRESS_FILES = {"model.ckpt"}  # visible progress a killed stage may leave (train --resume's checkpoint)


def _import_cmd(root):
    return ("query", "--r", 1, "--answers", root / "answers.csv")


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """One uninterrupted run, in-process, with a snapshot of the workspace after each stage:
    the starting points of the crash cases and the references they must reproduce."""
    from a2lc_cli.cli import invoke
    from a2lc_cli.state import Dataset, read_query

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("crash")
    ws = root / "run"
    snaps = {"root": root}

    def step(name, *args, at=None):
        code = invoke(["-q", "-w", str(at or ws), *map(str, args)])
        assert code == 0, (name, args)
        snaps[name] = copy_workspace(at or ws, root / name)

    settings = [a for s in SETTINGS for a in ("--set", s)]
    step("init", "init", *SIZE, "--budget", 15, *settings)
    step("pseudolabel", *PSEUDO)
    step("train0", *TRAIN0)
    step("acquire", *ACQUIRE)
    # people's answers: select without answering, then import a filled-in answers file
    human = copy_workspace(ws, root / "human")
    step("selected", "query", "--r", 1, "--annotator", "human", at=human)
    q = read_query(human / "rounds/r001/query.h5")
    with Dataset(human / "dataset.h5") as ds:
        gt = ds.mask_column("gt_label")[q.selected]
        names = [ds.classes.name(int(g)) for g in gt]
    with open(root / "answers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mask_id", "answer", "annotator", "seconds"])
        for j, (m, name) in enumerate(zip(q.selected.tolist(), names)):
            w.writerow([m, "" if j == 3 else name, "ana" if j % 2 else "bo", f"{1.5 + j:.1f}"])
    step("imported", *_import_cmd(root), at=human)
    # the simulated annotator for the LCM stages
    step("query", "query", "--r", 1)
    step("lcm-train", *LCM_TRAIN)
    step("lcm-correct", *LCM_CORRECT)
    yield snaps
    torch.set_num_threads(threads)


def _same_dataset(ws, ref):
    assert_same_arrays(h5_arrays(ws / "dataset.h5"), h5_arrays(ref / "dataset.h5"))


def _same_model(ws, ref):
    got = torch.load(ws / "rounds/r000/model.pt", weights_only=True)
    want = torch.load(ref / "rounds/r000/model.pt", weights_only=True)
    assert_same_state_dict(got["state_dict"], want["state_dict"])
    assert [(e["iteration"], e["loss"]) for e in got["log"]] == [(e["iteration"], e["loss"]) for e in want["log"]]
    assert json.loads((ws / "rounds/r000/train.json").read_text())["resumed_from"] == 4


def _same_acquisition(ws, ref):
    assert_same_arrays(h5_arrays(ws / "rounds/r001/acquire.h5"), h5_arrays(ref / "rounds/r001/acquire.h5"))


def _same_answers(ws, ref):
    from a2lc_cli.state import read_query

    got, want = read_query(ws / "rounds/r001/query.h5"), read_query(ref / "rounds/r001/query.h5")
    assert np.array_equal(got.selected, want.selected)
    assert len(got.answers) == len(want.answers) == len(want.selected) - 1  # one row left unanswered
    for k in ("mask", "label", "unit", "annotator", "seconds"):  # `time` is when the import ran
        assert np.array_equal(getattr(got.answers, k), getattr(want.answers, k)), k


def _same_lcm_model(ws, ref):
    got = torch.load(ws / "rounds/r001/lcm.pt", weights_only=False)
    want = torch.load(ref / "rounds/r001/lcm.pt", weights_only=False)
    assert_same_state_dict(got["state_dict"], want["state_dict"])
    assert got["log"]["loss"] == want["log"]["loss"]


def _same_corrections(ws, ref):
    assert_same_arrays(h5_arrays(ws / "rounds/r001/lcm.h5"), h5_arrays(ref / "rounds/r001/lcm.h5"))


# (start snapshot, command, crash point, reference snapshot, comparison, work checkpoint, work left on rerun)
CASES = {
    "pseudolabel": ("init", PSEUDO, "pseudolabel.image:6", "pseudolabel", _same_dataset, "pseudolabel.image", 8),
    "pseudolabel-rename": ("init", PSEUDO, "rename.dataset.h5", "pseudolabel", _same_dataset, "pseudolabel.image", 0),
    "train": ("pseudolabel", TRAIN0, "train.iteration:6", "train0", _same_model, "train.iteration", 8),
    "acquire": ("train0", ACQUIRE, "acquire.batch:5", "acquire", _same_acquisition, "acquire.batch", 2),
    "query-import": ("selected", None, "query.import", "imported", _same_answers, None, None),
    "query-import-rename": ("selected", None, "rename.query.h5", "imported", _same_answers, None, None),
    "lcm-train": ("query", LCM_TRAIN, "lcm.epoch:3", "lcm-train", _same_lcm_model, "lcm.epoch", 6),
    "lcm-correct": ("lcm-train", LCM_CORRECT, "rename.lcm.h5", "lcm-correct", _same_corrections, None, None),
}


def _visible(name: str) -> bool:
    return not any(part.startswith(".") for part in name.split("/"))


@pytest.mark.parametrize("case", list(CASES))
def test_killed_stage_leaves_a_valid_workspace_and_the_rerun_finishes_it(case, stages, cli, tmp_path, monkeypatch):
    start, cmd, point, done, same, work, left = CASES[case]
    cmd = cmd or _import_cmd(stages["root"])
    ws = copy_workspace(stages[start], tmp_path / "ws")
    status_before, files_before = status_json(cli, ws), file_hashes(ws)

    assert_killed(run_a2lc(ws, *cmd, A2LC_CRASH_AT=point))

    assert_readable(ws)
    assert status_json(cli, ws) == status_before
    files_after = file_hashes(ws)
    assert {k: v for k, v in files_after.items() if k in files_before} == files_before  # nothing changed ...
    new = {k for k in files_after if k not in files_before}
    assert all(not _visible(k) or k.rsplit("/", 1)[-1] in PROGRESS_FILES for k in new), new  # ... nothing published
    assert ".lock" in new  # the dead writer's lock

    trace = tmp_path / "trace"
    monkeypatch.setenv("A2LC_TRACE", str(trace))
    code, out, err = cli("-w", ws, *cmd)
    monkeypatch.delenv("A2LC_TRACE")
    assert code == 0, err
    assert "cleared a stale lock" in " ".join(err.split())
    if work is not None:
        assert trace_counts(trace).get(work, 0) == left  # resumed: only the work left was done

    same(ws, stages[done])
    assert status_json(cli, ws) == status_json(cli, stages[done])
    assert_readable(ws)
    assert sorted(k for k in file_hashes(ws) if not _visible(k)) == []  # no lock, temporaries or progress left
    assert sorted(file_hashes(ws)) == sorted(file_hashes(stages[done]))
