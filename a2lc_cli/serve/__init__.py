"""``a2lc query --r R --serve``: a local web page on which people answer a round's queried masks.

- ``session.py``: leases, validation and the append-only recording of answers (no HTTP);
- ``render.py``: the PNG views of a mask (highlighted image, zoomed crop);
- ``server.py``: the Starlette application and its routes, served by uvicorn;
- ``static/``: the page (plain HTML, CSS and JavaScript; nothing to build).

See docs/annotating.md for how people use it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import A2LCError
from ..stage_inputs import StageInputs, given
from ..state import Dataset
from ..workspace import Workspace
from .render import ViewCache
from .server import AnnotationServer, is_loopback, new_token
from .session import DEFAULT_LEASE_S, AnnotationSession, RequestError

__all__ = ["AnnotationServer", "AnnotationSession", "RequestError", "ViewCache", "check_bind", "make_server", "serve_query",
           "sigterm_as_ctrl_c"]


MAX_LEASE_S = 86400  # one day: a page idle longer than that gives its mask back


def check_bind(host: str, *, allow_remote: bool, lease_s: float = DEFAULT_LEASE_S) -> None:
    """Refuse a non-loopback ``host`` without ``allow_remote``, and a lease outside (0, MAX_LEASE_S] seconds."""
    if not is_loopback(host) and not allow_remote:
        raise A2LCError(f"--host {host} would let other machines reach the page; "
                        "pass --allow-remote as well (every request must then carry the printed token)")
    if not 0 < lease_s <= MAX_LEASE_S:  # NaN fails too; a lease of 1e308 s would hold a mask forever
        raise A2LCError(f"--lease must be a number of seconds in (0, {MAX_LEASE_S}] (got {lease_s})")


def _train_images(cfg: Config, ds: Dataset, inputs: StageInputs | None = None) -> Callable[[int], Any]:
    """read_image(i) for the train split of the workspace's source, checked against ``dataset.h5``
    (:class:`a2lc_cli.fingerprint.TrainImages`). Opened now, so a renamed, added or removed image
    stops ``--serve`` before the server starts (each image's size and content are checked as it is read)."""
    from ..fingerprint import TrainImages

    return TrainImages.of(given(inputs).open_source(cfg), ds)


def make_server(ws: Workspace, cfg: Config, r: int, *, host: str = "127.0.0.1", port: int = 0,
                allow_remote: bool = False, token: str | None = None, lease_s: float = DEFAULT_LEASE_S,
                read_image: Callable[[int], Any] | None = None, inputs: StageInputs | None = None,
                on_answer: Callable[[dict], None] | None = None) -> tuple[AnnotationServer, Dataset]:
    """Open round ``r``'s query for answering and bind the server (not yet serving).

    The page's images: ``read_image(i)`` when given, else the train images of the source ``inputs`` opens
    (:class:`a2lc_cli.stage_inputs.StageInputs`; None: the config's), checked against ``dataset.h5``.

    A non-loopback ``host`` needs ``allow_remote`` and always gets a token (a
    random one unless ``token`` is given). Returns the server and the dataset it
    reads images' segment maps from (close it after the server stops).
    """
    check_bind(host, allow_remote=allow_remote, lease_s=lease_s)
    if not is_loopback(host):
        token = token or new_token()
    session = AnnotationSession(ws, r, lease_s=lease_s, on_answer=on_answer)
    ds = Dataset(ws.dataset_path)
    try:
        if read_image is None:
            read_image = _train_images(cfg, ds, inputs)
        server = AnnotationServer(session, ViewCache(ds, read_image), host=host, port=port, token=token)
    except BaseException:
        ds.close()
        raise
    return server, ds


def sigterm_as_ctrl_c() -> Any:
    """From now on SIGTERM does what Ctrl-C does (KeyboardInterrupt in the main thread), so ``kill``,
    ``timeout`` or a service manager stop ``--serve`` as Ctrl-C does, in every phase: the summary
    when serving, ``interrupted`` (exit 130, nothing half-written) before. Returns the previous
    handler (None outside the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, stop)


def serve_until_stopped(server: AnnotationServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop gracefully (requests in flight finish, so an
    answer being saved is saved; answers already acknowledged are on disk)."""
    previous = sigterm_as_ctrl_c()
    worker = threading.Thread(target=server.serve_forever, name="a2lc-serve", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        worker.join(10)
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def serve_query(ws: Workspace, cfg: Config, r: int, *, on_start: Callable[[AnnotationServer], None],
                **options: Any) -> dict[str, Any]:
    """Serve round ``r`` until stopped; ``on_start(server)`` prints the URL. Returns a summary."""
    server, ds = make_server(ws, cfg, r, **options)
    try:
        on_start(server)
        serve_until_stopped(server)
    finally:
        ds.close()
    prog = server.session.progress()
    return {"round": r, "url": server.url, "saved_now": server.session.saved_this_session,
            "answered": prog["answered"], "budget": prog["budget"]}
