"""One round's annotation session: which mask each annotator sees next, leases, and recording answers.

Everything the web page does goes through :class:`AnnotationSession`, which is
independent of HTTP (the server in ``server.py`` only parses requests):

- ``next_mask`` hands an annotator (a browser tab, ``client``) the first mask in
  rank order (Eq. 13) that has no answer and no live lease of another tab, and
  leases it to that tab for ``lease_s`` seconds (renewed by ``heartbeat``), so two
  annotators never see the same mask at the same time;
- ``answer`` validates the answer exactly like an answers file row
  (:func:`a2lc_cli.annotator.validate_answer`), appends it to the round's answer
  log through :func:`a2lc_cli.annotator.merge_answers` (the one append-only path)
  and rewrites ``query.h5`` atomically (fsynced) before it returns, so a killed
  server or a closed tab loses nothing. Restarting resumes at the first mask
  without an answer.

An annotator may change their own answers (the replacement is appended; the old
row stays in the log) but never an answer given by someone else (409).
A "mask spans several classes" answer is stored as void (255) with the note
``mixed`` in the annotator column (``NAME|mixed``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..annotator import MIXED, NOTE_SEP, merge_answers, new_answers, parse_mask_id, split_annotator, validate_answer
from ..errors import A2LCError, os_error
from ..round_state import mask_state
from ..state import Dataset, Query, read_query, write_query
from ..workspace import Workspace

DEFAULT_LEASE_S = 120.0
TOP_K = 5  # candidate classes offered with digit keys
MAX_NAME = 64


class RequestError(A2LCError):
    """A request the page may not make: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Lease:
    client: str
    name: str
    expires: float  # clock() time

from ..textio import unsafe_char  # noqa: E402 - re-exported: the page's names and the answers files share it


def check_name(name: Any) -> str:
    """An annotator's name from the page: 1..64 printable characters, no ``|`` (400 otherwise)."""
    if name is not None and not isinstance(name, str):
        raise RequestError(400, "name must be a string")
    text = (name or "").strip()
    if not text:
        raise RequestError(400, "enter your name first (it is recorded with every answer)")
    bad = unsafe_char(text)
    if len(text) > MAX_NAME or NOTE_SEP in text or bad is not None:
        why = f" (U+{ord(bad):04X} is a control, formatting or invalid character)" if bad is not None else ""
        raise RequestError(400, f"name {ascii(text[:80])} must be at most {MAX_NAME} printable characters "
                                f"without '{NOTE_SEP}'{why}")
    return text


def check_client(client: Any) -> str:
    text = client.strip() if isinstance(client, str) else ""
    if not (1 <= len(text) <= 64) or not all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        raise RequestError(400, "client must be 1..64 letters, digits, '-' or '_' (the page makes one per tab)")
    return text


class AnnotationSession:
    """The query of round ``r`` opened for people to answer (see the module docstring).

    Holds: selected (B,) int64 mask ids in rank order; the answer log; current
    labels (M,) uint8 after round r-1; mean_prob (B,C) float32 of the selected masks
    (the model's candidates). Thread-safe: every method takes one lock.
    """

    def __init__(self, ws: Workspace, r: int, *, lease_s: float = DEFAULT_LEASE_S,
                 clock: Callable[[], float] = time.monotonic, on_answer: Callable[[dict], None] | None = None):
        from ..state import check_acquisition_fits, read_acquisition

        self.ws, self.r, self.lease_s, self.clock, self.on_answer = ws, r, float(lease_s), clock, on_answer
        self.path = ws.path("query", r)
        if not self.path.exists():
            raise A2LCError(f"round {r} has no selection yet ({self.path}); run `a2lc query --r {r} --annotator human` first")
        self.query: Query = read_query(self.path)
        self.selected = self.query.selected
        self.rank = {int(m): j for j, m in enumerate(self.selected.tolist())}
        self.meta = self.query.attrs.get("meta", {})
        self.inputs = self.query.attrs.get("inputs", {})
        if self.meta.get("unit") == "pixel":
            raise A2LCError(f"round {r} was queried at pixel level (the ALC baseline); people answer whole masks")
        with Dataset(ws.dataset_path) as ds:
            self.classes = ds.classes
            self.image_names = list(ds.names)
            self.mask_image = ds.mask_image[self.selected].astype(np.int64)
            self.mask_area = ds.mask_area[self.selected].astype(np.int64)
            self.bbox = ds.mask_column("bbox")[self.selected].astype(np.int64)
            self.current = mask_state(ws, ds, r - 1).label[self.selected].astype(np.int64)
        acq = read_acquisition(ws.path("acquire", r))
        with Dataset(ws.dataset_path) as ds:
            check_acquisition_fits(acq, ds, ws.path("acquire", r))
        from ..stages import QUERY, is_current

        if not is_current(ws, QUERY, r, self.inputs):  # the registry's one staleness check, as `a2lc status`'s
            raise A2LCError(f"{self.path} is stale ({ws.path('acquire', r)} or {ws.dataset_path} changed after round "
                            f"{r}'s selection); its candidates would not match the queried masks")
        self.mean_prob = np.asarray(acq.mean_prob, np.float32)[self.selected]
        self.leases: dict[int, Lease] = {}
        self.lock = threading.RLock()
        self.saved_this_session = 0
        # mask id -> (current answer, annotator entry of that answer); later log rows win
        a = self.query.answers
        self.effective: dict[int, tuple[int, str]] = {
            int(m): (int(lab), str(ann)) for m, lab, ann in zip(a.mask.tolist(), a.label.tolist(), a.annotator.tolist())}
        self.answered = np.isin(self.selected, np.fromiter(self.effective, np.int64, len(self.effective)))  # (B,) bool

    # ------------------------------------------------------------------ state

    def _expire(self) -> None:
        now = self.clock()
        for m in [m for m, lease in self.leases.items() if lease.expires <= now]:
            del self.leases[m]

    def _lease(self, m: int, client: str, name: str) -> None:
        for other in [k for k, lease in self.leases.items() if lease.client == client and k != m]:
            del self.leases[other]  # one open mask per tab
        self.leases[m] = Lease(client, name, self.clock() + self.lease_s)

    def progress(self, name: str | None = None) -> dict[str, Any]:
        """Answered / budget, what this annotator answered, and how many tabs hold a mask."""
        with self.lock:
            self._expire()
            eff = self.effective
            mine = sum(1 for _, ann in eff.values() if split_annotator(ann)[0] == name) if name else 0
            return {"answered": len(eff), "budget": int(len(self.selected)), "yours": mine,
                    "open_elsewhere": len(self.leases), "done": len(eff) >= len(self.selected)}

    def info(self) -> dict[str, Any]:
        """What the page needs once: round, classes with colours, lease length."""
        pal = np.asarray(self.classes.palette, np.uint8).reshape(-1, 3)
        return {
            "round": self.r, "budget": int(len(self.selected)), "lease_s": self.lease_s, "top_k": TOP_K,
            "classes": [{"index": k, "name": n, "color": "#%02x%02x%02x" % tuple(int(v) for v in pal[k])}
                        for k, n in enumerate(self.classes.names)],
        }

    # ------------------------------------------------------------------ masks
    def mask_index(self, mask_id: Any) -> int:
        """Rank position (0-based) of a mask of this round's selection; 400 for anything else."""
        try:
            m = parse_mask_id(mask_id)
        except A2LCError as e:
            raise RequestError(400, str(e)) from None
        if m not in self.rank:
            raise RequestError(400, f"mask {m} was not queried in this round")
        return self.rank[m]

    def describe(self, j: int, *, name: str | None = None) -> dict[str, Any]:
        """The page's view of the mask at rank position j."""
        m = int(self.selected[j])
        order = np.argsort(-self.mean_prob[j], kind="stable")[:TOP_K]
        cur = int(self.current[j])
        eff = self.effective.get(m)
        answer = None
        if eff is not None:
            who, note = split_annotator(eff[1])
            answer = {"label": self.classes.name(eff[0]), "index": eff[0], "annotator": who, "note": note,
                      "yours": who == name}
        lease = self.leases.get(m)
        return {
            "mask_id": m, "rank": j + 1, "image": self.image_names[int(self.mask_image[j])],
            "area": int(self.mask_area[j]),
            "current": {"index": cur, "name": self.classes.name(cur)},
            "candidates": [{"key": str(i + 1), "index": int(c), "name": self.classes.names[c],
                            "prob": round(float(self.mean_prob[j, c]), 4)} for i, c in enumerate(order.tolist())],
            "answer": answer,
            "lease_s": self.lease_s if lease is None else max(0.0, round(lease.expires - self.clock(), 1)),
        }

    def next_mask(self, client: str, name: str, *, skip: list[Any] | tuple = ()) -> dict[str, Any]:
        """Lease and describe the first unanswered mask (rank order) no other tab holds, skipping ``skip``.

        ``skip``: the masks this tab skipped. The reply's ``skipped_left`` counts those still
        unanswered, so the page can offer them again (they come back at the end of its queue);
        with no mask left, ``message`` says how many are skipped here and how many are open in other tabs.
        """
        client, name = check_client(client), check_name(name)
        skip_ids = set()
        for s in list(skip)[:10000]:
            try:
                skip_ids.add(parse_mask_id(s))
            except A2LCError:
                raise RequestError(400, f"skip must be a list of mask ids (got {ascii(s)[:40]})") from None
        with self.lock:
            self._expire()
            open_ids = [int(self.selected[j]) for j in np.flatnonzero(~self.answered).tolist()]
            skipped_left = sum(1 for m in open_ids if m in skip_ids)
            for m in open_ids:
                if m in skip_ids:
                    continue
                lease = self.leases.get(m)
                if lease is not None and lease.client != client:
                    continue
                self._lease(m, client, name)
                return {"mask": self.describe(self.rank[m], name=name), "progress": self.progress(name),
                        "skipped_left": skipped_left}
            self.release(client)
            elsewhere = len(open_ids) - skipped_left
            parts = ([f"{skipped_left} skipped here"] if skipped_left else []) + (
                [f"{elsewhere} open in other tabs"] if elsewhere else [])
            why = ("every queried mask has an answer" if not open_ids else
                   f"no mask to show: of the {len(open_ids)} without an answer, " + " and ".join(parts))
            return {"mask": None, "message": why, "progress": self.progress(name), "skipped_left": skipped_left}

    def open_mask(self, client: str, name: str, mask_id: Any) -> dict[str, Any]:
        """Lease a given mask (going back to an earlier one); 409 while another tab holds it."""
        client, name = check_client(client), check_name(name)
        with self.lock:
            j = self.mask_index(mask_id)
            m = int(self.selected[j])
            self._expire()
            lease = self.leases.get(m)
            if lease is not None and lease.client != client:
                raise RequestError(409, f"mask {m} is open in another page ({lease.name}); try again later")
            self._lease(m, client, name)
            return {"mask": self.describe(j, name=name), "progress": self.progress(name)}

    def heartbeat(self, client: str) -> dict[str, Any]:
        """Renew this tab's lease."""
        client = check_client(client)
        with self.lock:
            self._expire()
            renewed = 0
            for lease in self.leases.values():
                if lease.client == client:
                    lease.expires = self.clock() + self.lease_s
                    renewed += 1
            return {"renewed": renewed}

    def release(self, client: str) -> dict[str, Any]:
        """Drop this tab's lease (the page closes)."""
        client = check_client(client)
        with self.lock:
            gone = [m for m, lease in self.leases.items() if lease.client == client]
            for m in gone:
                del self.leases[m]
            return {"released": len(gone)}

    # ------------------------------------------------------------------ answers
    def answer(self, client: str, name: str, mask_id: Any, answer: Any, seconds: Any = None) -> dict[str, Any]:
        """Record one answer: a class name or index, ``void``, or ``mixed`` (spans several classes).

        Validation as for an answers file (400). 409 when another tab holds the
        mask's lease, or when someone else already answered it differently.
        Returns the stored state and the progress; query.h5 is on disk when it returns.
        """
        client, name = check_client(client), check_name(name)
        if not isinstance(answer, (str, int)) or isinstance(answer, bool):
            raise RequestError(400, "answer must be a class name, a class index, 'void' or 'mixed'")
        text = str(answer).strip()
        if not text:
            raise RequestError(400, "answer is empty")
        note = MIXED if text.lower() == MIXED else ""
        try:
            got = validate_answer({"mask_id": mask_id, "answer": "void" if note else text, "seconds": seconds},
                                  classes=self.classes, selected=self.rank.keys(), default_annotator=name)
        except A2LCError as e:
            raise RequestError(400, str(e)) from None
        assert got is not None
        m, label, sec, _ = got
        entry = name + (NOTE_SEP + note if note else "")
        with self.lock:
            self._expire()
            lease = self.leases.get(m)
            if lease is not None and lease.client != client:
                raise RequestError(409, f"mask {m} is open in another page ({lease.name}); its answer is theirs to give")
            prev = self.effective.get(m)
            if prev is not None and split_annotator(prev[1])[0] != name and prev[0] != label:
                who = split_annotator(prev[1])[0]
                raise RequestError(409, f"mask {m} was answered by {who} ({self.classes.name(prev[0])}); "
                                        "answers of other annotators are never overwritten")
            new = new_answers(np.array([m], np.int64), np.array([label], np.uint8), unit="mask", annotator=entry,
                              seconds=np.array([sec if math.isfinite(sec) else np.nan], np.float32))
            res = merge_answers(self.query.answers, new, replace=True)
            if res.added:
                q = Query(self.query.selected, self.query.selected_score, res.answers, self.query.attrs)
                try:
                    write_query(self.path, q, inputs=self.inputs, meta=self.meta)
                except (OSError, A2LCError) as e:  # nothing acknowledged; query.h5 keeps the earlier answers
                    why = os_error(e, self.path) if isinstance(e, OSError) else e
                    raise RequestError(500, f"could not save the answer: {why}") from None
                self.query = q
                self.effective[m] = (int(label), entry)
                self.answered[self.rank[m]] = True
                self.saved_this_session += 1
            self.leases.pop(m, None)
            stored = {"mask_id": m, "label": self.classes.name(label), "index": label, "annotator": name, "note": note,
                      "seconds": None if not math.isfinite(sec) else round(sec, 3),
                      "status": ("replaced" if prev is not None else "added") if res.added else "unchanged"}
            if self.on_answer is not None and res.added:
                try:
                    self.on_answer(stored)
                except Exception:  # noqa: BLE001 - reporting an answer never fails an answer already saved
                    pass
            return {"stored": stored, "progress": self.progress(name)}
