"""`a2lc query --serve`: the annotation server's API over real HTTP on 127.0.0.1.

The workspace is the crafted 2-image case of test_query.py (ABC ranking E, B, D, A, C);
round 1 queries the top 3 masks E, B, D for a person. Model's mean softmax per mask:
E (0.55, 0.4, 0.05), B (0.1, 0.3, 0.6), D (0.2, 0.2, 0.6); current labels E c0, B c1, D c2.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from a2lc_cli.errors import A2LCError
from a2lc_cli.serve import make_server
from a2lc_cli.state import read_query

from fixtures import write_folder
from test_query import A, B, D, E, _case, crafted  # noqa: F401 - crafted is a fixture


@pytest.fixture
def ws(crafted, cli):
    ws = crafted[0]
    assert cli("-w", ws.root, "acquire", "--r", "1")[0] == 0
    return ws


def _with_real_source(ws, tmp_path) -> None:
    """Point the crafted workspace at a folder source with the same train names (img0, img1), so a
    subprocess — which has none of the in-process fakes — passes the page's check of image names."""
    _, _, gts, _ = _case()
    root = write_folder(tmp_path / "data", {"train": {f"img{i}": gt for i, gt in enumerate(gts)}}, ["c0", "c1", "c2"],
                        flat=True)
    cfg = ws.config()
    cfg.source.kind, cfg.source.root, cfg.source.preset = "folder", str(root), None
    ws.save_config(cfg)


def _selected(ws, cli, budget=3):
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--budget", budget, "--annotator", "human")
    assert code == 0, err


class Client:
    """A tiny HTTP client for the server's API (one connection per request)."""

    def __init__(self, port: int, *, client: str = "tab1", name: str = "ana", headers: dict | None = None):
        self.port, self.client, self.name, self.headers = port, client, name, headers or {}

    def request(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = {**self.headers, **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        res = conn.getresponse()
        payload = res.read()
        conn.close()
        ctype = res.getheader("Content-Type") or ""
        return res.status, (json.loads(payload) if ctype.startswith("application/json") else payload), res

    def post(self, path: str, **body):
        status, data, _ = self.request("POST", path, {"client": self.client, "name": self.name, **body})
        return status, data

    def next(self, **kw):
        return self.post("/api/next", **kw)

    def answer(self, mask_id, answer, seconds=1.5):
        return self.post("/api/answer", mask_id=mask_id, answer=answer, seconds=seconds)


@pytest.fixture
def serve(ws, stage_inputs):
    """Start a server on a free loopback port; yields a factory (token=..., lease_s=...) -> server."""
    from a2lc_cli.config import Config

    started = []

    def start(**options):
        server, ds = make_server(ws, Config(), 1, port=0, inputs=stage_inputs, **options)
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        started.append((server, ds, t))
        return server

    yield start
    for server, ds, t in started:
        server.shutdown()
        server.server_close()
        ds.close()
        t.join(5)


def _log(ws):
    q = read_query(ws.artifact(1, "query.h5"))
    return q, dict(zip(*[a.tolist() for a in q.answers.effective()]))


def test_answers_are_saved_the_moment_they_are_given(ws, cli, serve):
    _selected(ws, cli)
    server = serve()
    c = Client(server.port)
    status, info, _ = c.request("GET", "/api/info")
    assert status == 200 and info["round"] == 1 and info["budget"] == 3
    assert [k["name"] for k in info["classes"]] == ["c0", "c1", "c2"]
    status, r = c.next()
    assert status == 200
    m = r["mask"]
    assert m["mask_id"] == E and m["rank"] == 1 and m["image"] == "img1" and m["area"] == 52
    assert m["current"] == {"index": 0, "name": "c0"}
    assert [k["name"] for k in m["candidates"]] == ["c0", "c1", "c2"]  # E's mean softmax (0.55, 0.4, 0.05)
    assert m["candidates"][0]["prob"] == pytest.approx(0.55, abs=1e-4) and m["candidates"][1]["key"] == "2"
    assert r["progress"] == {"answered": 0, "budget": 3, "yours": 0, "open_elsewhere": 1, "done": False}
    # the highlighted image and the zoomed crop are PNGs of the right shapes
    status, full, res = c.request("GET", f"/api/mask/{E}/full.png")
    assert status == 200 and res.getheader("Content-Type") == "image/png" and full[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    img = cv2.imdecode(np.frombuffer(full, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert img.shape == (480, 480, 3)  # the 8×8 image enlarged ×60
    assert tuple(img[4 * 60 + 30, 5 * 60 + 30]) == (115, 1, 115)  # inside E: tinted 0.55·1 + 0.45·magenta
    assert tuple(img[7 * 60 + 30, 30]) == (1, 1, 1)  # row 7 is not in E: the image's own value (image 1 = 1s)
    assert tuple(img[30, 30]) == (1, 1, 1)  # D is not highlighted either
    status, crop, _ = c.request("GET", f"/api/mask/{E}/crop.png")
    assert status == 200 and crop[:4] == b"\x89PNG"

    status, r = c.answer(E, "c1", seconds=2.5)
    assert status == 200, r
    assert r["stored"] == {"mask_id": E, "label": "c1", "index": 1, "annotator": "ana", "note": "",
                           "seconds": 2.5, "status": "added"}
    q, eff = _log(ws)  # on disk already
    assert eff == {E: 1} and q.answers.annotator.tolist() == ["ana"] and q.answers.seconds.tolist() == [2.5]
    status, r = c.next()
    assert r["mask"]["mask_id"] == B and r["progress"]["answered"] == 1 and r["progress"]["yours"] == 1
    assert c.answer(B, "2")[0] == 200  # a class index, as in an answers file
    assert c.answer(D, "void")[0] == 200
    status, r = c.next()
    assert r["mask"] is None and r["progress"]["done"] and "every queried mask" in r["message"]
    assert _log(ws)[1] == {E: 1, B: 2, D: 255}


def test_two_annotators_never_get_the_same_mask_nor_overwrite_each_other(ws, cli, serve):
    _selected(ws, cli)
    server = serve(lease_s=10)
    now = [1000.0]
    server.session.clock = lambda: now[0]
    ana, bob = Client(server.port, client="tabA", name="ana"), Client(server.port, client="tabB", name="bob")
    assert ana.next()[1]["mask"]["mask_id"] == E
    assert bob.next()[1]["mask"]["mask_id"] == B  # E is leased to ana's tab
    status, r = bob.answer(E, "c2")
    assert status == 409 and "open in another page (ana)" in r["error"]
    assert ana.answer(E, "c1")[0] == 200
    status, r = bob.answer(E, "c2")  # answered by someone else: never overwritten
    assert status == 409 and "answered by ana" in r["error"]
    status, r = bob.post("/api/open", mask_id=E)  # going to it is fine, changing it is not
    assert status == 200 and r["mask"]["answer"] == {"label": "c1", "index": 1, "annotator": "ana", "note": "",
                                                     "yours": False}
    assert bob.answer(E, "c1")[1]["stored"]["status"] == "unchanged"  # agreeing adds nothing
    # ana changes her own answer: appended, the old one stays in the log
    assert ana.post("/api/open", mask_id=E)[0] == 200
    status, r = ana.answer(E, "c0")
    assert status == 200 and r["stored"]["status"] == "replaced"
    q, eff = _log(ws)
    assert q.answers.mask.tolist() == [E, E] and q.answers.label.tolist() == [1, 0] and eff[E] == 0
    # leases expire: a tab that went away gives its mask back
    assert bob.next()[1]["mask"]["mask_id"] == B  # opening E had given B back (one open mask per tab)
    assert ana.next()[1]["mask"]["mask_id"] == D
    now[0] += 11
    bob2 = Client(server.port, client="tabC", name="bob")
    assert bob2.next()[1]["mask"]["mask_id"] == B  # bob's first tab's lease on B expired
    assert bob.next()[1]["mask"]["mask_id"] == D  # and ana's on D
    status, r = ana.answer(D, "c2")
    assert status == 409 and "(bob)" in r["error"]
    # a heartbeat keeps a lease alive past its first expiry
    now[0] += 8
    assert bob.post("/api/heartbeat")[1]["renewed"] == 1 and bob2.post("/api/heartbeat")[1]["renewed"] == 1
    now[0] += 8
    assert ana.next()[1]["mask"] is None  # B and D still held by bob's tabs
    assert bob.post("/api/release")[1]["released"] == 1
    assert ana.next()[1]["mask"]["mask_id"] == D
    # skipping: the tab asks for masks other than the skipped ones
    assert ana.next(skip=[D])[1]["mask"] is None


def test_mixed_answers_and_answer_time_metric(ws, cli, serve):
    _selected(ws, cli)
    server = serve()
    ana, bob = Client(server.port, client="a", name="ana"), Client(server.port, client="b", name="bob")
    assert ana.answer(E, "mixed", seconds=4)[1]["stored"] == {
        "mask_id": E, "label": "void", "index": 255, "annotator": "ana", "note": "mixed", "seconds": 4.0, "status": "added"}
    assert ana.answer(B, "c2", seconds=2)[0] == 200
    assert bob.answer(D, "c2", seconds=9)[0] == 200
    assert ana.answer(B, "c1", seconds=3)[0] == 200  # a change took time too
    q, eff = _log(ws)
    assert eff == {E: 255, B: 1, D: 2}
    assert q.answers.annotator.tolist() == ["ana|mixed", "ana", "bob", "ana"]
    code, out, err = cli("-w", ws.root, "evaluate", "--metric", "answer-time", "--r", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["answers"] == 4 and res["median_s"] == 3.5 and res["mean_s"] == 4.5 and res["total_s"] == 18
    assert res["per_annotator"] == {
        "ana": {"answers": 3, "median_s": 3.0, "mean_s": 3.0, "total_s": 9.0},
        "bob": {"answers": 1, "median_s": 9.0, "mean_s": 9.0, "total_s": 9.0},
    }
    assert json.loads(ws.artifact(1, "metrics-answer-time.json").read_text())["answers"] == 4


@pytest.mark.parametrize("body, status, message", [
    ({"mask_id": 99, "answer": "c0"}, 400, "mask 99 was not queried in this round"),
    ({"mask_id": A, "answer": "c0"}, 400, f"mask {A} was not queried in this round"),  # a real mask, not selected
    ({"mask_id": "x", "answer": "c0"}, 400, "is not an integer"),
    ({"mask_id": E, "answer": "car"}, 400, "unknown class name 'car'"),
    ({"mask_id": E, "answer": "7"}, 400, "class index 7 is not a class"),
    ({"mask_id": E, "answer": ""}, 400, "answer is empty"),
    ({"mask_id": E, "answer": "c0", "seconds": -1}, 400, "non-negative"),
    ({"mask_id": E, "answer": "c0", "name": ""}, 400, "enter your name"),
    ({"mask_id": E, "answer": "c0", "name": "a|b"}, 400, "without '|'"),
    ({"mask_id": E, "answer": "c0", "client": "../x"}, 400, "client must be"),
])
def test_bad_answers_are_refused_with_a_message(ws, cli, serve, body, status, message):
    _selected(ws, cli)
    before = ws.artifact(1, "query.h5").read_bytes()
    server = serve()
    got, data, _ = Client(server.port).request("POST", "/api/answer", {"client": "tab1", "name": "ana", **body})
    assert got == status and message in data["error"]
    assert ws.artifact(1, "query.h5").read_bytes() == before


def test_malformed_requests(ws, cli, serve):
    _selected(ws, cli)
    c = Client(serve().port)
    status, data, _ = c.request("POST", "/api/answer", raw=b"mask_id=1", headers={"Content-Type": "text/plain"})
    assert status == 400 and "Content-Type: application/json" in data["error"]
    status, data, _ = c.request("POST", "/api/answer", raw=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in data["error"]
    assert c.request("GET", "/api/mask/99/full.png")[0] == 400
    assert c.request("GET", f"/api/mask/{E}/other.png")[0] == 404
    assert c.request("GET", "/etc/passwd")[0] == 404
    assert c.request("GET", "/static/../session.py")[0] == 404
    status, page, res = c.request("GET", "/")
    assert status == 200 and b"static/app.js" in page and "script-src 'self'" in res.getheader("Content-Security-Policy")
    assert c.request("GET", "/static/app.js")[0] == 200


def test_token_and_host_checks(ws, cli, serve):
    _selected(ws, cli)
    server = serve(token="s3cret")
    c = Client(server.port)
    status, data, _ = c.request("GET", "/api/info")
    assert status == 403 and "token" in data["error"]
    assert c.request("GET", "/")[0] == 403
    assert c.request("GET", "/api/info", headers={"X-A2LC-Token": "wrong"})[0] == 403
    assert Client(server.port, headers={"X-A2LC-Token": "s3cret"}).request("GET", "/api/info")[0] == 200
    status, _, res = c.request("GET", "/?token=s3cret")
    cookie = res.getheader("Set-Cookie")
    assert status == 200 and cookie.startswith(f"a2lc_token_{server.port}=s3cret;") and "HttpOnly" in cookie
    assert c.request("GET", "/static/app.css", headers={"Cookie": cookie.split(";")[0]})[0] == 200
    status, data = c.answer(E, "c0")
    assert status == 403
    assert Client(server.port, headers={"X-A2LC-Token": "s3cret"}).answer(E, "c0")[0] == 200
    # a non-loopback bind needs --allow-remote, and then always has a token
    with pytest.raises(A2LCError, match="--allow-remote"):
        make_server(ws, None, 1, host="0.0.0.0")
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--serve", "--host", "192.0.2.1")
    assert code != 0 and "--allow-remote" in err


def test_loopback_server_refuses_other_hosts_and_cross_site_posts(ws, cli, serve):
    _selected(ws, cli)
    c = Client(serve().port)
    status, data, _ = c.request("GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and "evil.example" in data["error"]
    assert c.request("GET", "/api/info", headers={"Host": "localhost"})[0] == 200
    status, data, _ = c.request("POST", "/api/next", {"client": "t", "name": "ana"},
                                headers={"Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in data["error"]


def test_restart_resumes_at_the_first_unanswered_mask(ws, cli, serve):
    _selected(ws, cli)
    first = serve()
    c = Client(first.port)
    assert c.next()[1]["mask"]["mask_id"] == E
    assert c.answer(E, "c1")[0] == 200
    assert c.next()[1]["mask"]["mask_id"] == B  # leased, then the server "dies"
    first.shutdown()
    second = serve()  # leases are gone; answers are on disk
    r = Client(second.port, client="new", name="bob").next()[1]
    assert r["mask"]["mask_id"] == B and r["progress"]["answered"] == 1


def test_serve_command_selects_holds_the_lock_and_stops_cleanly(ws, cli, tmp_path):
    """The real CLI in a subprocess: selection as `--annotator human` would make it, the URL
    printed, other writers refused with the holder's command, readers working, SIGTERM stops it."""
    _with_real_source(ws, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "a2lc_cli", "-w", str(ws.root), "query", "--r", "1", "--budget", "3",
         "--serve", "--port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        start = json.loads(line)
        assert start["round"] == 1 and start["selected"] == 3 and start["token"] is None
        port = int(start["url"].rsplit(":", 1)[1].strip("/"))
        assert read_query(ws.artifact(1, "query.h5")).selected.tolist() == [E, B, D]
        holder = json.loads((ws.root / ".lock").read_text())
        assert holder["pid"] == proc.pid and "--serve" in holder["command"]
        answers = tmp_path / "a.csv"
        answers.write_text(f"mask_id,answer\n{E},c1\n")
        code, _, err = cli("-w", ws.root, "query", "--r", "1", "--answers", answers)
        err = " ".join(err.split())
        assert code == 3 and f"in use by pid {proc.pid}" in err and "--serve" in err
        code, out, err = cli("-w", ws.root, "status", "--json")
        assert code == 0, err
        c = Client(port)
        assert c.answer(E, "c1", seconds=1)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "1 answer saved" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert not (ws.root / ".lock").exists()
    assert _log(ws)[1] == {E: 1}


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default disposition. A suite started in the background by a shell
    without job control (``./.ci/run &``) runs with SIGINT ignored, and an ignored signal stays ignored across
    exec: Python then installs no KeyboardInterrupt handler and the SIGINT case would wait out its timeout."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigterm_stops_serve_as_ctrl_c_does_before_the_page_is_up(ws, tmp_path, sig):
    """Caught while the selection is being written (a deterministic stall at its rename): both signals
    give `interrupted` (and under --json the error object), exit 130, no query.h5 and no lock (SIGTERM
    used to kill the process silently before the page was up)."""
    _with_real_source(ws, tmp_path)
    trace = tmp_path / "trace"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "A2LC_STALL_AT": "rename.query.h5",
           "A2LC_STALL_SECONDS": "120", "A2LC_TRACE": str(trace)}
    proc = subprocess.Popen([sys.executable, "-m", "a2lc_cli", "-w", str(ws.root), "query", "--r", "1", "--budget", "3",
                             "--serve", "--port", "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=_default_sigint)
    try:
        for _ in range(1200):  # until the stall (the trace line is written before it sleeps)
            if trace.exists() and "rename.query.h5" in trace.read_text() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(sig)
        assert proc.wait(60) == 130
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert err.strip() == "interrupted" and json.loads(out) == {"error": "interrupted"}
    assert not ws.artifact(1, "query.h5").exists() and not (ws.root / ".lock").exists()
