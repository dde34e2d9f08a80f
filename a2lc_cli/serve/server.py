"""The HTTP side of ``a2lc query --serve``: a standard-library threading server for the page.

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
404, 409 (another annotator holds or answered the mask) or 500 (could not save).
Bound to 127.0.0.1 by default; a non-loopback bind needs ``allow_remote`` and then
every request must carry the token (``X-A2LC-Token`` header or ``?token=``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import A2LCError
from .render import ViewCache
from .session import AnnotationSession, RequestError

MAX_BODY = 64 * 1024
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}


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


class AnnotationServer(ThreadingHTTPServer):
    """Serves one :class:`AnnotationSession`. ``token`` None = no token needed (loopback only)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, session: AnnotationSession, views: ViewCache, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None):
        self.session, self.views, self.token, self.host = session, views, token, host
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host.strip("[]"), port), Handler)
        except OSError as e:
            raise A2LCError(f"cannot listen on {host}:{port}: {e.strerror or e}; "
                            "choose another --port (0 picks a free one)") from None
        self.port = int(self.server_address[1])

    @property
    def url(self) -> str:
        """The address to open (with the token when one is needed)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")


class Handler(BaseHTTPRequestHandler):
    server: AnnotationServer
    protocol_version = "HTTP/1.1"
    server_version = "a2lc"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # answers are reported by the session's callback; request lines would drown them

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, ctype: str, *, cache: bool = False) -> None:
        self.send_response(status)
        if self._set_cookie:
            self.send_header("Set-Cookie", self._set_cookie)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorised(self, query: dict[str, list[str]]) -> str | None:
        """None when the request may proceed, else why it is refused (403)."""
        srv = self.server
        host = (self.headers.get("Host") or "").strip()
        if srv.token is None:
            # loopback only: refuse other Host names (DNS rebinding) and cross-site posts
            try:
                name = urlsplit("//" + host).hostname or ""
            except ValueError:
                name = ""
            if not is_loopback(name) and name != srv.host.strip("[]").lower():
                return f"host {host!r} is not this machine's loopback address"
        else:
            cookie = SimpleCookie()
            try:
                cookie.load(self.headers.get("Cookie") or "")
            except CookieError:
                pass
            in_url = (query.get("token") or [""])[0]
            jar = cookie.get(self._cookie_name)
            given = self.headers.get("X-A2LC-Token") or in_url or (jar.value if jar else "")
            if not hmac.compare_digest(given.encode(), srv.token.encode()):
                return "missing or wrong token: open the URL that `a2lc query --serve` printed (it ends in ?token=...)"
            if in_url:  # the page's style sheet, script and images then need no token in their URLs
                self._set_cookie = f"{self._cookie_name}={srv.token}; HttpOnly; SameSite=Strict; Path=/"
        origin = self.headers.get("Origin")
        if self.command == "POST" and origin and origin != "null" and urlsplit(origin).netloc != host:
            return f"requests from {origin} are not accepted"
        return None

    def _body(self) -> dict[str, Any]:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(400, "send JSON (Content-Type: application/json)")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            raise RequestError(400, f"request body larger than {MAX_BODY} bytes")
        try:
            data = json.loads(self.rfile.read(n) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(400, f"body is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise RequestError(400, "body must be a JSON object")
        return data

    @property
    def _cookie_name(self) -> str:
        return f"a2lc_token_{self.server.port}"

    def _dispatch(self) -> None:
        self._set_cookie = ""
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        refused = self._authorised(query)
        if refused:
            if self.command == "POST":
                self.rfile.read(min(int(self.headers.get("Content-Length") or 0), MAX_BODY))
            self._error(HTTPStatus.FORBIDDEN, refused)
            return
        try:
            if self.command in ("GET", "HEAD"):
                self._get(url.path, query)
            else:
                self._post(url.path, self._body())
        except RequestError as e:
            self._error(e.status, str(e))
        except A2LCError as e:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e))

    do_GET = do_HEAD = do_POST = _dispatch

    # ------------------------------------------------------------------ routes
    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        s = self.server.session
        if path in ("/", "/index.html"):
            self._send(200, static_file("index.html"), STATIC["index.html"])
        elif path.startswith("/static/") and path[len("/static/"):] in STATIC:
            name = path[len("/static/"):]
            self._send(200, static_file(name), STATIC[name])
        elif path == "/api/info":
            self._json(200, s.info())
        elif path == "/api/progress":
            self._json(200, s.progress((query.get("name") or [None])[0]))
        elif path.startswith("/api/mask/") and path.endswith((".png",)):
            parts = path.split("/")  # ['', 'api', 'mask', id, 'full.png']
            if len(parts) != 5 or parts[4] not in ("full.png", "crop.png"):
                raise RequestError(404, f"no such image {path}")
            j = s.mask_index(parts[3])
            full, crop = self.server.views.get(int(s.selected[j]), int(s.mask_image[j]), s.bbox[j])
            self._send(200, full if parts[4] == "full.png" else crop, "image/png", cache=True)
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            raise RequestError(404, f"no such page {path}")

    def _post(self, path: str, body: dict[str, Any]) -> None:
        s = self.server.session
        if path == "/api/next":
            skip = body.get("skip") or []
            if not isinstance(skip, list):
                raise RequestError(400, "skip must be a list of mask ids")
            self._json(200, s.next_mask(body.get("client"), body.get("name"), skip=skip))
        elif path == "/api/open":
            self._json(200, s.open_mask(body.get("client"), body.get("name"), body.get("mask_id")))
        elif path == "/api/answer":
            self._json(200, s.answer(body.get("client"), body.get("name"), body.get("mask_id"),
                                     body.get("answer"), body.get("seconds")))
        elif path == "/api/heartbeat":
            self._json(200, s.heartbeat(body.get("client")))
        elif path == "/api/release":
            self._json(200, s.release(body.get("client")))
        else:
            raise RequestError(404, f"no such endpoint {path}")
