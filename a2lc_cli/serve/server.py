"""The HTTP side of ``a2lc query --serve``: a Starlette application served by uvicorn.

Routes (JSON in and out; every answer goes through :class:`AnnotationSession`):

    GET  /                          the page (static/index.html)
    GET  /static/<file>             its script and style sheet
    GET  /api/info                  round, budget, classes (name, colour), lease length
    GET  /api/progress?name=N       answered / budget, yours, tabs with an open mask
    GET  /api/mask/<id>/full.png    the image with the mask highlighted
    GET  /api/mask/<id>/crop.png    the mask's neighbourhood, enlarged, outlined
    POST /api/next      {client, name, skip?}                 lease the next mask
    POST /api/open      {client, name, mask_id}               lease a given mask (go back)
    POST /api/answer    {client, name, mask_id, answer, seconds}
    POST /api/heartbeat {client}    POST /api/release {client}

Errors are ``{"error": message}`` with 400 (bad input), 403 (token, host or origin),
404, 405, 409 (another annotator holds or answered the mask), 413 (body too large)
or 500 (could not save, or a bug: the server keeps serving). Requests that HTTP
itself cannot parse (``Content-Length: abc``, a smuggled second request) are
answered 400 by uvicorn's h11 parser and the connection is closed.

Why a framework: HTTP framing (Content-Length, keep-alive, unread bodies) is done
by uvicorn's h11 parser, which always consumes a request's whole body before it
reads the next request, whatever the application answered; a hand-written
``http.server`` handler that answered an error without reading the body let the
body's bytes be parsed as a second, smuggled request (issue 15).

Bound to 127.0.0.1 by default; a non-loopback bind needs ``allow_remote`` and then
every request must carry the token (``X-A2LC-Token`` header, ``?token=`` or the
cookie set by the first ``?token=`` page load). A loopback server refuses other
``Host`` names (DNS rebinding). Every state-changing request (POST) from a browser
must come from the page itself: an ``Origin`` other than this server's (including
``Origin: null`` of sandboxed frames and ``file:`` pages) or a ``Sec-Fetch-Site``
of ``cross-site``/``same-site`` is refused, and the body must be
``application/json``, which a cross-site form cannot send without a CORS
preflight (never granted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from ..errors import A2LCError
from ..textio import json_failure
from .render import ViewCache
from .session import AnnotationSession, RequestError

MAX_BODY = 64 * 1024
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",  # no other site may embed the mask images (<img>) or pages
    "Content-Security-Policy":
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random URL-safe token (128 bits)."""
    return secrets.token_urlsafe(16)


def static_file(name: str) -> bytes:
    return resources.files("a2lc_cli.serve").joinpath("static", name).read_bytes()


_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


def host_name(host_header: str) -> str:
    """The host name of a ``Host`` header (no port, lower case, no brackets); '' unless it is
    exactly ``name[:port]`` or ``[ipv6][:port]``."""
    m = _HOST.fullmatch(host_header.strip())
    return (m.group(1) or m.group(2)).lower() if m else ""


def refusal(method: str, headers: Any, query: Any, cookies: dict[str, str], *, token: str | None,
            bound_host: str, cookie_name: str) -> str | None:
    """Why a request is refused (403), or None when it may proceed.

    ``headers``/``query``: mappings with ``get``. Loopback servers (``token`` None)
    check the ``Host`` (DNS rebinding); others check the token. POSTs from a
    browser must be same-origin (``Origin: null`` is cross-site).
    """
    host = (headers.get("host") or "").strip()
    if token is None:
        name = host_name(host)
        if not is_loopback(name) and name != bound_host.strip("[]").lower():
            return f"host {host!r} is not this machine's loopback address"
    else:
        given = headers.get("x-a2lc-token") or query.get("token") or cookies.get(cookie_name) or ""
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
            return "missing or wrong token: open the URL that `a2lc query --serve` printed (it ends in ?token=...)"
    if method not in ("GET", "HEAD"):
        origin = headers.get("origin")
        if origin is not None:
            try:
                netloc = urlsplit(origin).netloc if origin != "null" else None
            except ValueError:
                netloc = None
            if netloc is None or netloc.lower() != host.lower():
                return f"requests from {origin!r} are not accepted (only this page may change answers)"
        if (headers.get("sec-fetch-site") or "").lower() in ("cross-site", "same-site"):
            return "cross-site requests are not accepted (only this page may change answers)"
    return None


def parse_json_body(ctype: str, body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; RequestError 400 for anything else.

    Refuses: another Content-Type, invalid UTF-8 or JSON, NaN/Infinity, nesting
    too deep for Python's parser, integers beyond Python's digit limit, non-objects.
    """
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise RequestError(400, "send JSON (Content-Type: application/json)")
    if not body.strip():
        return {}

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise RequestError(400, "body is not valid JSON (not UTF-8)") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, nesting, int digit limit, NaN/Infinity
        raise RequestError(400, f"body is not valid JSON ({json_failure(e)})") from None
    if not isinstance(data, dict):
        raise RequestError(400, "body must be a JSON object")
    return data


MAX_CONNECTIONS = 128  # open connections and requests in flight at once (uvicorn answers 503 beyond)


class RateLimit(logging.Filter):
    """Lets at most ``burst`` records through per ``window`` seconds, then one note of how many were
    dropped: a flood of accept errors (file descriptors exhausted) cannot fill the log or the disk."""

    def __init__(self, burst: int = 5, window: float = 60.0):
        super().__init__()
        self.burst, self.window = burst, window
        self.start, self.passed, self.dropped = -float("inf"), 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        import time

        now = time.monotonic()
        if now - self.start >= self.window:
            if self.dropped:
                record.msg = f"({self.dropped} similar messages suppressed) {record.msg}"
            self.start, self.passed, self.dropped = now, 0, 0
        if self.passed < self.burst:
            self.passed += 1
            return True
        self.dropped += 1
        return False


REQUEST_TIMEOUT = 30.0  # seconds a connection may take to send a request's headers, and then its body


def _protocol() -> type:
    """uvicorn's h11 protocol with a deadline for the request line and headers: uvicorn times out only
    idle keep-alive connections, so a connection that never sends a whole request (or sends one byte
    at a time) would hold its file descriptor forever. Such a connection is closed after
    :data:`REQUEST_TIMEOUT` seconds (the body has its own deadline in ``read_body``)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _deadline: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return Protocol


def _uvicorn_server(config: Any) -> Any:
    """A uvicorn.Server without its signal handlers (``serve_until_stopped`` owns the signals)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


class AnnotationServer:
    """Serves one :class:`AnnotationSession`. ``token`` None = no token needed (loopback only).

    The socket is bound in the constructor (so a busy port is an error at once);
    :meth:`serve_forever` serves until :meth:`shutdown` (from another thread), which
    waits for requests in flight, so an answer being saved is saved and acknowledged.
    """

    def __init__(self, session: AnnotationSession, views: ViewCache, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, log: Callable[[str], None] | None = None):
        self.session, self.views, self.token, self.host = session, views, token, host
        self.log = log or (lambda line: print(line, file=sys.stderr))
        bind = host.strip("[]")
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind, port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            raise A2LCError(f"cannot listen on {host}:{port}: {e.strerror or e}; "
                            "choose another --port (0 picks a free one)") from None
        sock.setblocking(False)
        self.socket = sock
        self.port = int(sock.getsockname()[1])
        self.app = build_app(self)
        self._uvicorn: Any = None
        self._stopped = threading.Event()
        self._stopped.set()
        self._stop_requested = False

    @property
    def url(self) -> str:
        """The address to open (with the token when one is needed)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def cookie_name(self) -> str:
        return f"a2lc_token_{self.port}"

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        """Serve in this thread until :meth:`shutdown` (``poll_interval`` kept for the old signature)."""
        import uvicorn

        # limit_concurrency: beyond MAX_CONNECTIONS open connections a request is answered 503 and closed, so
        # idle or half-sent connections cannot exhaust file descriptors; idle keep-alive ones close after 5 s
        config = uvicorn.Config(self.app, http=_protocol(), loop="asyncio", lifespan="off", log_config=None,
                                access_log=False, server_header=False, date_header=False,
                                timeout_graceful_shutdown=5, timeout_keep_alive=5,
                                limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=MAX_BODY)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # protocol noise; our own log says what matters
            logging.getLogger(name).setLevel(logging.CRITICAL)
        asyncio_log = logging.getLogger("asyncio")  # "socket.accept() out of system resource", once per failed accept
        if not any(isinstance(f, RateLimit) for f in asyncio_log.filters):
            asyncio_log.addFilter(RateLimit())
        self._uvicorn = _uvicorn_server(config)
        self._stopped.clear()
        try:
            if self._stop_requested:
                return
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (waits for requests in flight and for :meth:`serve_forever` to return)."""
        self._stop_requested = True
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        self._stopped.wait(30)

    def server_close(self) -> None:
        """Close the listening socket."""
        with contextlib.suppress(OSError):
            self.socket.close()


# --------------------------------------------------------------------------- the application
def build_app(server: AnnotationServer) -> Any:
    """The Starlette application of ``server`` (routes as in the module docstring)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route

    def respond(status: int, body: bytes, ctype: str, *, cache: bool = False, cookie: str = "") -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600" if cache else "no-store"}
        if cookie:
            headers["Set-Cookie"] = cookie
        return Response(body, status_code=status, media_type=ctype, headers=headers)

    def as_json(status: int, obj: Any, **kw: Any) -> Response:
        return respond(status, json.dumps(obj).encode(), "application/json", **kw)

    def error(status: int, message: str) -> Response:
        return as_json(status, {"error": message})

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY:  # answered now, not after reading
            raise RequestError(413, f"request body larger than {MAX_BODY} bytes")
        n = 0
        chunks = []
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):  # a body sent byte by byte cannot hold the connection
                async for chunk in request.stream():
                    n += len(chunk)
                    if n > MAX_BODY:
                        raise RequestError(413, f"request body larger than {MAX_BODY} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(408, f"request body not sent within {REQUEST_TIMEOUT:g} s") from None
        return b"".join(chunks)

    def endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Checks access, then runs ``handler``; maps RequestError to its status and anything else to 500."""

        async def run(request: Request) -> Response:
            cookie = ""
            try:
                refused = refusal(request.method, request.headers, request.query_params, dict(request.cookies),
                                  token=server.token, bound_host=server.host, cookie_name=server.cookie_name)
                if refused:
                    return error(403, refused)
                if server.token is not None and request.query_params.get("token"):
                    # the page's style sheet, script and images then need no token in their URLs
                    cookie = f"{server.cookie_name}={server.token}; HttpOnly; SameSite=Strict; Path=/"
                res = await handler(request)
            except RequestError as e:
                res = error(e.status, str(e))
            except ClientDisconnect:  # the client went away mid-body: its event, not a server error (not logged)
                res = error(400, "client disconnected before sending the whole request")
            except A2LCError as e:
                res = error(500, str(e))
            except Exception as e:  # noqa: BLE001 - a bug must not stop the server: answer 500, keep serving
                server.log(f"error: {request.method} {request.url.path}: {type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]}")
                res = error(500, f"internal error ({type(e).__name__}); the server keeps running")
            if cookie:
                res.headers["Set-Cookie"] = cookie
            return res

        return run

    s = server.session

    async def index(request: Request) -> Response:
        return respond(200, static_file("index.html"), STATIC["index.html"])

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise RequestError(404, f"no such page {request.url.path}")
        return respond(200, static_file(name), STATIC[name])

    async def info(request: Request) -> Response:
        return as_json(200, await run_in_threadpool(s.info))

    async def progress(request: Request) -> Response:
        return as_json(200, await run_in_threadpool(s.progress, request.query_params.get("name")))

    async def mask_image(request: Request) -> Response:
        view = request.path_params["view"]
        if view not in ("full.png", "crop.png"):
            raise RequestError(404, f"no such image {request.url.path}")
        j = s.mask_index(request.path_params["mask_id"])
        full, crop = await run_in_threadpool(server.views.get, int(s.selected[j]), int(s.mask_image[j]), s.bbox[j])
        return respond(200, full if view == "full.png" else crop, "image/png", cache=True)

    async def favicon(request: Request) -> Response:
        return respond(204, b"", "image/x-icon")

    def post(call: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            ctype = request.headers.get("content-type") or ""
            parse_json_body(ctype, b"")  # the type first: a wrong one is refused before reading the body
            body = parse_json_body(ctype, await read_body(request))
            return as_json(200, await run_in_threadpool(call, body))
        return handler

    def next_mask(b: dict[str, Any]) -> Any:
        skip = b.get("skip") or []
        if not isinstance(skip, list):
            raise RequestError(400, "skip must be a list of mask ids")
        return s.next_mask(b.get("client"), b.get("name"), skip=skip)

    routes = [
        Route("/", endpoint(index), methods=["GET"]),
        Route("/index.html", endpoint(index), methods=["GET"]),
        Route("/static/{name}", endpoint(static), methods=["GET"]),
        Route("/favicon.ico", endpoint(favicon), methods=["GET"]),
        Route("/api/info", endpoint(info), methods=["GET"]),
        Route("/api/progress", endpoint(progress), methods=["GET"]),
        Route("/api/mask/{mask_id}/{view}", endpoint(mask_image), methods=["GET"]),
        Route("/api/next", endpoint(post(next_mask)), methods=["POST"]),
        Route("/api/open", endpoint(post(lambda b: s.open_mask(b.get("client"), b.get("name"), b.get("mask_id")))),
              methods=["POST"]),
        Route("/api/answer", endpoint(post(lambda b: s.answer(b.get("client"), b.get("name"), b.get("mask_id"),
                                                              b.get("answer"), b.get("seconds")))), methods=["POST"]),
        Route("/api/heartbeat", endpoint(post(lambda b: s.heartbeat(b.get("client")))), methods=["POST"]),
        Route("/api/release", endpoint(post(lambda b: s.release(b.get("client")))), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        what = "page" if exc.status_code == 404 else "method"
        msg = f"no such {what} {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return error(exc.status_code, str(msg))

    async def server_error(request: Request, exc: Exception) -> Response:  # pragma: no cover - endpoint() catches
        return error(500, f"internal error ({type(exc).__name__})")

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
