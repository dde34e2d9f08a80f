"""The annotation server under attack (issue 15): request smuggling, DNS rebinding, ``Origin: null``,
malformed requests (always a 4xx, never a dropped connection) and unexpected errors (500, and the
server keeps serving). Raw sockets where the attack needs bytes http.client would not send.

Workspace and selection as in test_serve.py (round 1 queries E, B, D).
"""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2lc_cli.state import read_query

from test_serve import Client, _selected, crafted, serve, ws  # noqa: F401 - fixtures
from test_query import A, B, E


def raw(port: int, data: bytes, *, wait: float = 3.0) -> bytes:
    """Send ``data`` on one connection and read until the server closes it or ``wait`` s of silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return got


def statuses(response_bytes: bytes) -> list[int]:
    """HTTP status codes of the responses in a byte stream (in order)."""
    out = []
    for line in response_bytes.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            out.append(int(line.split()[1]))
    return out


def request(method: str, path: str, body: bytes, headers: dict[str, str], *, port: int) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *[f"{k}: {v}" for k, v in headers.items()]]
    if "Content-Length" not in headers:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def smuggled_answer(port: int, name: str = "mallory") -> bytes:
    body = json.dumps({"client": "evil", "name": name, "mask_id": E, "answer": "c2", "seconds": 1}).encode()
    return request("POST", "/api/answer", body, {"Content-Type": "application/json"}, port=port)


def answers(ws) -> list:
    return read_query(ws.artifact(1, "query.h5")).answers.annotator.tolist()


@pytest.mark.parametrize("attack", ["cross-origin padded", "dns-rebinding padded", "origin null", "wrong type"])
def test_a_body_is_never_parsed_as_a_second_request(ws, cli, serve, attack):
    """The issue's attack: an error answered without reading the body let the body's bytes, a complete
    JSON POST to /api/answer, be parsed as a new request, which stored an answer under any name."""
    _selected(ws, cli)
    port = serve().port
    inner = smuggled_answer(port)
    headers = {"Content-Type": "text/plain"}
    padding = b"x" * 65536
    if attack == "cross-origin padded":
        headers["Origin"] = "http://evil.example"
    elif attack == "dns-rebinding padded":
        headers["Origin"] = f"http://evil.example:{port}"
    elif attack == "origin null":
        headers, padding = {"Content-Type": "text/plain", "Origin": "null"}, b""
    else:  # same origin, but a form's Content-Type
        headers["Origin"] = f"http://127.0.0.1:{port}"
    data = request("POST", "/api/answer", padding + inner, headers, port=port)
    if attack == "dns-rebinding padded":
        data = data.replace(f"Host: 127.0.0.1:{port}".encode(), f"Host: evil.example:{port}".encode())
    got = raw(port, data)
    codes = statuses(got)
    assert codes and codes[0] in (400, 403), got[:300]
    assert len(codes) == 1, f"a second response means the body was parsed as a request: {got[:500]!r}"
    assert answers(ws) == []
    # the same connection style still works for an honest request afterwards
    assert statuses(raw(port, smuggled_answer(port, "ana") + b"", wait=3)) == [200]
    assert answers(ws) == ["ana"]


def test_dns_rebinding_host_and_origin_null_are_refused(ws, cli, serve):
    _selected(ws, cli)
    port = serve().port
    c = Client(port)
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::1].evil", ""):
        status, data, _ = c.request("GET", "/api/info", headers={"Host": host})
        assert status in (400, 403), host
    status, data = Client(port, headers={"Origin": "null"}).next()
    assert status == 403 and "'null'" in data["error"]
    status, data = Client(port, headers={"Origin": f"http://localhost:{port}"}).next()
    assert status == 403  # an Origin of another host name than the request's Host
    status, data = Client(port, headers={"Sec-Fetch-Site": "cross-site"}).next()
    assert status == 403
    assert Client(port, headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}).next()[0] == 200
    # a token server: the Origin rule holds as well, with the right token
    assert answers(ws) == []


def test_pages_and_images_cannot_be_embedded_by_other_sites(ws, cli, serve):
    _selected(ws, cli)
    c = Client(serve().port)
    status, _, res = c.request("GET", "/api/info")
    assert status == 200 and res.getheader("Cross-Origin-Resource-Policy") == "same-origin"


@pytest.mark.parametrize("lease", [0, -1, float("nan"), 1e308, 86401])
def test_absurd_leases_are_refused(lease):
    from a2lc_cli.errors import A2LCError
    from a2lc_cli.serve import check_bind

    with pytest.raises(A2LCError, match="--lease"):
        check_bind("127.0.0.1", allow_remote=False, lease_s=lease)
    check_bind("127.0.0.1", allow_remote=False, lease_s=86400)


def test_token_server_refuses_origin_null_even_with_the_token(ws, cli, serve):
    _selected(ws, cli)
    port = serve(token="s3cret").port
    status, data = Client(port, headers={"X-A2LC-Token": "s3cret", "Origin": "null"}).answer(E, "c0")
    assert status == 403
    assert Client(port, headers={"X-A2LC-Token": "s3cret"}).answer(E, "c0")[0] == 200


def _post(port: int, path: str, text: bytes | str, **headers: str) -> tuple[int, dict | bytes]:
    body = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    got = raw(port, request("POST", path, body, {"Content-Type": "application/json", "Connection": "close", **headers},
                            port=port))
    head, _, payload = got.partition(b"\r\n\r\n")
    codes = statuses(head)
    assert codes, f"no response (dropped connection?): {got!r}"
    try:
        return codes[0], json.loads(payload)
    except ValueError:
        return codes[0], payload


def _answer_body(**kw) -> str:
    return json.dumps({"client": "tab1", "name": "ana", "mask_id": E, "answer": "c0", "seconds": 1, **kw})


@pytest.mark.parametrize("case, body, status, needle", [
    ("nested 30,000 deep", "[" * 30000 + "]" * 30000, 400, "nested too deeply"),
    ("nested object", '{"":' * 10000 + "1" + "}" * 10000, 400, "nested too deeply"),
    ("5,000-digit integer", '{"client": "tab1", "name": "ana", "mask_id": ' + "9" * 5000 + ', "answer": "c0"}',
     400, "a number with 5000 digits (more than 4300) is too large"),
    ("lone surrogate name", _answer_body(name="\ud800"), 400, "name"),
    ("lone surrogate, raw bytes", b'{"client":"tab1","name":"\xed\xa0\x80","mask_id":1,"answer":"c0"}', 400, "UTF-8"),
    ("seconds 1e300", _answer_body(seconds=1e300), 400, "seconds"),
    ("seconds true", _answer_body(seconds=True), 400, "seconds"),
    ("seconds NaN literal", _answer_body().replace('"seconds": 1', '"seconds": NaN'), 400, "NaN is not allowed"),
    ("seconds Infinity", _answer_body().replace('"seconds": 1', '"seconds": Infinity'), 400, "not allowed"),
    ("mask id 3_4_4", _answer_body(mask_id="3_4_4"), 400, "not an integer"),
    ("mask id true", _answer_body(mask_id=True), 400, "not an integer"),
    ("mask id 1.0", _answer_body(mask_id=1.0), 400, "not an integer"),
    ("control character in name", _answer_body(name="an\x07a"), 400, "U+0007"),
    ("bidi override in name", _answer_body(name="ana\u202egnp.exe"), 400, "U+202E"),
    ("bidi isolate in name", _answer_body(name="\u2066ana"), 400, "U+2066"),
    ("line separator in name", _answer_body(name="a\u2028b"), 400, "U+2028"),
    ("name not a string", _answer_body(name=["ana"]), 400, "name must be a string"),
    ("answer not a string", _answer_body(answer={"x": 1}), 400, "answer must be"),
    ("client not a string", _answer_body(client=12), 400, "client must be"),
    ("not an object", "[1, 2]", 400, "JSON object"),
    ("invalid JSON", "{nope", 400, "not valid JSON"),
    ("body too large", '{"x": "' + "a" * 70000 + '"}', 413, "larger than"),
])
def test_malformed_requests_get_a_4xx(ws, cli, serve, case, body, status, needle):
    _selected(ws, cli)
    port = serve().port
    before = ws.artifact(1, "query.h5").read_bytes()
    got, data = _post(port, "/api/answer", body)
    assert got == status, (case, data)
    assert isinstance(data, dict) and needle in data["error"], (case, data)
    assert ws.artifact(1, "query.h5").read_bytes() == before
    assert Client(port).answer(E, "c0")[0] == 200  # and the server keeps serving


@pytest.mark.parametrize("length", ["abc", "-1", "1 2", "99999999999999999999999"])
def test_bad_content_length_is_a_400(ws, cli, serve, length):
    _selected(ws, cli)
    port = serve().port
    got = raw(port, request("POST", "/api/answer", b"{}", {"Content-Type": "application/json",
                                                          "Content-Length": length}, port=port))
    assert statuses(got) == [400], got
    assert Client(port).request("GET", "/api/info")[0] == 200


def test_a_declared_body_over_the_limit_is_refused_at_once(ws, cli, serve):
    """Content-Length over the limit with a short body: a 413 right away, not a connection left waiting."""
    _selected(ws, cli)
    port = serve().port
    got = raw(port, request("POST", "/api/answer", b"{}", {"Content-Type": "application/json",
                                                          "Content-Length": "100000"}, port=port))
    assert statuses(got)[:1] == [413], got
    assert Client(port).request("GET", "/api/info")[0] == 200


def test_other_malformed_http(ws, cli, serve):
    _selected(ws, cli)
    port = serve().port
    for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
                 b"POST /api/next HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 3\r\n\r\n0\r\n\r\n"):
        assert statuses(raw(port, data))[:1] == [400], data
    c = Client(port)
    status, data, _ = c.request("PUT", "/api/answer", {"x": 1})
    assert status == 405 and "error" in data
    status, data, _ = c.request("GET", "/api/mask/3_4_4/full.png")
    assert status == 400 and "not an integer" in data["error"]
    status, data, _ = c.request("GET", f"/api/mask/{A}/full.png")
    assert status == 400
    status, data, _ = c.request("GET", "/api/progress?name=%ED%A0%80")  # invalid UTF-8 in the query
    assert status in (200, 400)
    assert c.request("GET", "/api/info")[0] == 200


def test_an_unexpected_error_is_a_500_and_the_server_keeps_serving(ws, cli, serve):
    _selected(ws, cli)
    server = serve()
    logged = []
    server.log = logged.append
    c = Client(server.port)
    real = server.session.info

    def broken():
        raise ZeroDivisionError("boom")

    server.session.info = broken
    status, data, _ = c.request("GET", "/api/info")
    assert status == 500 and "ZeroDivisionError" in data["error"]
    assert logged and "boom" in logged[0]
    server.session.info = real
    assert c.request("GET", "/api/info")[0] == 200
    # a failing answer callback (it printed through rich) does not fail a saved answer
    server.session.on_answer = lambda a: (_ for _ in ()).throw(RuntimeError("printer broke"))
    status, data = Client(server.port, name="[/]eve").answer(E, "c1")
    assert status == 200 and data["stored"]["annotator"] == "[/]eve"
    assert answers(ws) == ["[/]eve"]
    assert Client(server.port).answer(B, "c1")[0] == 200


def test_disk_full_while_saving_an_answer_is_a_500_and_serving_goes_on(ws, cli, serve, monkeypatch):
    """ENOSPC from the answer's write: 500 naming the file, nothing acknowledged, query.h5 intact."""
    import errno

    from a2lc_cli.serve import session as session_mod

    _selected(ws, cli)
    server = serve()
    c = Client(server.port)
    assert c.answer(E, "c1")[0] == 200
    before = ws.artifact(1, "query.h5").read_bytes()
    real = session_mod.write_query

    def full(path, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(session_mod, "write_query", full)
    status, data = c.answer(B, "c2")
    assert status == 500 and "no space left on device" in data["error"] and "query.h5" in data["error"]
    assert ws.artifact(1, "query.h5").read_bytes() == before
    monkeypatch.setattr(session_mod, "write_query", real)
    assert c.answer(B, "c2")[0] == 200
    assert read_query(ws.artifact(1, "query.h5")).answers.mask.tolist() == [E, B]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
FIELDS = st.fixed_dictionaries({}, optional={
    "client": st.one_of(st.just("tab1"), JSON), "name": st.one_of(st.just("ana"), JSON, st.text(max_size=70)),
    "mask_id": st.one_of(st.sampled_from([E, B, A, str(E), f" {E} ", "3_4_4", f"+{E}"]), JSON),
    "answer": st.one_of(st.sampled_from(["c0", "c1", "2", "void", "mixed", "255", "c9"]), JSON),
    "seconds": st.one_of(st.sampled_from([0, 1.5, "2", "", None, -1, 1e300, True]), JSON),
    "skip": JSON,
})


@settings(max_examples=150, derandomize=True, database=None, deadline=dt.timedelta(seconds=30),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(["/api/answer", "/api/next", "/api/open", "/api/heartbeat", "/api/release"]),
       body=st.one_of(FIELDS, JSON), raw_bytes=st.none() | st.binary(max_size=200))
def test_fuzz_api_bodies_get_a_2xx_or_4xx_and_never_break_the_server(ws, cli, serve, path, body, raw_bytes):
    if not ws.artifact(1, "query.h5").exists():
        _selected(ws, cli)
    server = getattr(ws, "_server", None) or serve()
    ws._server = server
    data = raw_bytes if raw_bytes is not None else json.dumps(body).encode()
    got, payload = _post(server.port, path, data)
    assert got in (200, 400, 409, 413), (path, body, raw_bytes, payload)
    assert isinstance(payload, dict) and (got == 200 or "error" in payload)
    assert Client(server.port).request("GET", "/api/info")[0] == 200
    read_query(ws.artifact(1, "query.h5"))  # the log still reads (checksum valid)


def _closed_by_server(s: socket.socket) -> bool:
    """True when the server closes ``s`` (EOF) before the socket's timeout; reads and drops any response."""
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_client_leaving_mid_body_is_not_a_server_error(ws, cli, serve):
    """Issue 15: a client that disconnected mid-body was answered 500 and logged as
    `error: POST /api/heartbeat: ClientDisconnect`; it is the client's event, not logged."""
    _selected(ws, cli)
    server = serve()
    logged = []
    server.log = logged.append
    for path in ("/api/heartbeat", "/api/answer"):
        head = request("POST", path, b'{"client": "a"', {"Content-Type": "application/json", "Content-Length": "500"},
                       port=server.port)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(head)
        assert Client(server.port).request("GET", "/api/info")[0] == 200  # also waits for the server's turn
    assert logged == []
    assert answers(ws) == []


def test_connections_that_never_finish_a_request_are_closed(ws, cli, serve, monkeypatch):
    """Idle or half-sent connections are closed after the request deadline (uvicorn alone keeps them
    open forever, so a few thousand would exhaust the server's file descriptors)."""
    from a2lc_cli.serve import server as server_module

    monkeypatch.setattr(server_module, "REQUEST_TIMEOUT", 0.5)
    _selected(ws, cli)
    server = serve()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    half_head = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    half_head.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    half_body = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    half_body.sendall(request("POST", "/api/heartbeat", b"{", {"Content-Type": "application/json", "Content-Length": "50"},
                              port=server.port))
    with idle, half_head, half_body:
        assert _closed_by_server(idle) and _closed_by_server(half_head)
        assert _closed_by_server(half_body)
    assert Client(server.port).request("GET", "/api/info")[0] == 200


def test_connections_beyond_the_limit_get_a_503(ws, cli, serve, monkeypatch):
    from a2lc_cli.serve import server as server_module

    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 3)
    _selected(ws, cli)
    server = serve()
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    try:
        got = raw(server.port, request("GET", "/api/info", b"", {}, port=server.port))
        assert statuses(got) == [503]
    finally:
        for s in held:
            s.close()
    import time

    for _ in range(100):  # the server notices the closed connections
        if Client(server.port).request("GET", "/api/info")[0] == 200:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the server did not serve again once connections closed")


def test_log_flood_is_bounded():
    """The asyncio accept-error flood (file descriptors exhausted) passes 5 lines a minute, then a count."""
    import logging

    from a2lc_cli.serve.server import RateLimit

    f = RateLimit(burst=5, window=60.0)
    records = [logging.LogRecord("asyncio", logging.ERROR, "x", 1, "socket.accept() out of system resource", (), None)
               for _ in range(1000)]
    assert sum(f.filter(r) for r in records) == 5 and f.dropped == 995
    f.start -= 61  # a minute later: one line again, saying how many were dropped
    r = records[0]
    assert f.filter(r) and r.msg.startswith("(995 similar messages suppressed)")
