"""The collection on the board's HTTP server (http_view.py): the labelling page's JSON API and the
files `edgecls data pull` fetches. Each route takes the request's handler; every path 404s with
one JSON line when the run has no --collect.

    GET  /label                      the labelling page (http_pages.py)
    GET  /label/queue?order=newest|uncertain&who=ID
                                     {"order", "items", "progress", "classes", "unclear",
                                      "lease_seconds"}: the queue less the frames leased to others
    GET  /label/image/NAME           a frame's JPEG (queued, unclear or labelled)
    POST /label {"name", "label"}    200 {"name", "label", "progress"}; 400 not a class, 404 no
                                     such frame, 409 labelled already (someone else was first)
    POST /label/undo {"name"}        200 {"name", "label": what it was, "progress"}; 409 not
                                     labelled
    POST /label/lease {"name", "who"} 200 {"name", "seconds"}; 409 another labeller holds it or
                                     it is labelled; 404 gone; "name": "" only ends who's lease
    GET  /collect/files[?all=1]      {"classes", "files": [{"path", "bytes", "sha256"}]}
    GET  /collect/file/PATH          the file; Range: bytes=N- (206, or 416 past the end),
                                     If-Range, ETag "sha256"; 404 for any path not ours

Files go out a chunk at a time, each write within the server's WRITE_SECONDS.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote

from edgecls.runtime.collection.store import (
    LEASE_SECONDS,
    UNCLEAR_LABEL,
    CollectStore,
    LabelRefused,
)
from edgecls.runtime.sinks import http_pages

MAX_ITEMS = 200  # frames a queue answer lists
CHUNK = 1 << 16  # bytes a file is written in
WHO = re.compile(r"^[A-Za-z0-9_-]{0,64}$")  # a labelling page's own id
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
UNSATISFIABLE = (-1, -1)
JSON = "application/json"


def store_of(h) -> CollectStore | None:
    """The run's collection (read at each request: the collecting sink may open after this one),
    or None once answered 404."""
    store = h.context.collect
    if store is None:
        h._send(404, JSON, {"error": "no collection in this run: start it with --collect DIR"})
    return store


# --- the labelling page ---


def label_page(h) -> None:
    if store_of(h) is not None:
        http_pages.send_page(h, http_pages.LABEL_PAGE)


def queue(h) -> None:
    order = h.query.get("order", ["newest"])[-1]
    who = h.query.get("who", [""])[-1]
    if order not in ("newest", "uncertain") or not WHO.match(who):
        error = "give order=newest or order=uncertain, and who=[A-Za-z0-9_-]{0,64}"
        return h._send(400, JSON, {"error": error})
    if (store := store_of(h)) is None:
        return
    body = {
        "order": order,
        "items": [i.to_dict() for i in store.items(order, MAX_ITEMS, who)],
        "progress": store.progress(),
        "classes": list(store.classes),
        "unclear": UNCLEAR_LABEL,
        "lease_seconds": LEASE_SECONDS,
    }
    h._send(200, JSON, body)


def image(h, name: str) -> None:
    if (store := store_of(h)) is None:
        return
    path = store.image_path(unquote(name))
    if path is None:
        return h._send(404, JSON, {"error": f"no frame {name[:80]} in the collection"})
    send_file(h, path, "image/jpeg", cache="private, max-age=3600")


def post_label(h, body: str) -> None:
    fields = _fields(h, body, "name", "label")
    if fields is None or (store := store_of(h)) is None:
        return
    name, label = fields
    try:
        store.label(name, label, labeller(h))
    except LabelRefused as exc:
        return h._send(exc.status, JSON, {"error": str(exc)})
    h._send(200, JSON, {"name": name, "label": label, "progress": store.progress()})


def post_undo(h, body: str) -> None:
    fields = _fields(h, body, "name")
    if fields is None or (store := store_of(h)) is None:
        return
    try:
        was = store.undo(fields[0], labeller(h))
    except LabelRefused as exc:
        return h._send(exc.status, JSON, {"error": str(exc)})
    h._send(200, JSON, {"name": fields[0], "label": was, "progress": store.progress()})


def post_lease(h, body: str) -> None:
    fields = _fields(h, body, "name", "who")
    if fields is None or (store := store_of(h)) is None:
        return
    name, who = fields
    if not WHO.match(who):
        return h._send(400, JSON, {"error": "who: give [A-Za-z0-9_-]{0,64}"})
    try:
        store.lease(name, who)
    except LabelRefused as exc:
        return h._send(exc.status, JSON, {"error": str(exc)})
    h._send(200, JSON, {"name": name, "seconds": LEASE_SECONDS})


def labeller(h) -> str:
    """Who a label is from, for the frame's history: how they signed in and from where."""
    return f"{getattr(h, 'via', 'open')} from {h.client_address[0]}"


def _fields(h, body: str, *names: str) -> tuple[str, ...] | None:
    """The named string fields of a JSON object body, or None once answered 400."""
    try:
        data = json.loads(body or "{}")
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(n), str) for n in names):
        fields = ", ".join(f'"{n}"' for n in names)
        h._send(400, JSON, {"error": f"give a JSON object with the strings {fields}"})
        return None
    return tuple(data[n] for n in names)


# --- the files, for `edgecls data pull` ---


def files(h) -> None:
    if (store := store_of(h)) is None:
        return
    every = h.query.get("all", ["0"])[-1] in ("1", "true", "yes")
    h._send(200, JSON, {"classes": list(store.classes), "files": store.labelled_files(every)})


def file(h, relative: str) -> None:
    if (store := store_of(h)) is None:
        return
    path = store.resolve(unquote(relative))
    digest = None if path is None else store.digest(path)
    if path is None or digest is None:
        return h._send(404, JSON, {"error": f"no file {relative[:120]} in the collection"})
    send_file(h, path, "application/octet-stream", etag=f'"{digest[1]}"')


def send_file(h, path: Path, ctype: str, etag: str | None = None, cache: str = "no-cache") -> None:
    """A file, whole or the byte range asked for, written a chunk at a time."""
    try:
        f = path.open("rb")
    except OSError:  # moved (labelled, undone) since it was found: ask again
        return h._send(404, JSON, {"error": f"{path.name} moved; ask again"})
    with f:
        size = os.fstat(f.fileno()).st_size
        asked = h.headers.get("Range")
        if asked and etag and h.headers.get("If-Range", etag) != etag:
            asked = None  # the file changed since the client's first part: all of it
        span = byte_range(asked, size)
        if span == UNSATISFIABLE:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{size}")
            h.send_header("Content-Length", "0")
            return h.end_headers()
        start, end = span or (0, size - 1)
        h.send_response(206 if span else 200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Cache-Control", cache)
        if etag:
            h.send_header("ETag", etag)
        if span:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if h.command != "HEAD":
            _copy(h, f, start, end - start + 1)


def byte_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a Range header asks for; None for the whole file (no header, or
    one this server does not serve: several ranges, a malformed one); UNSATISFIABLE past the
    end."""
    m = RANGE.match((value or "").strip())
    if m is None or m.groups() == ("", ""):
        return None
    first, last = m.groups()
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else UNSATISFIABLE
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    return UNSATISFIABLE if start >= size else (start, end)


def _copy(h, f, start: int, length: int) -> None:
    """`length` bytes from `start`; a client that goes away or stops reading is counted."""
    f.seek(start)
    try:
        while length > 0 and (chunk := f.read(min(CHUNK, length))):
            h.wfile.write(chunk)  # one write: within WRITE_SECONDS, or a timeout
            length -= len(chunk)
    except ConnectionError:
        h.sink.counts.add("disconnects")
        h.close_connection = True
    except TimeoutError:
        h.sink.counts.add("timeouts")
        h.close_connection = True
    if length > 0:  # the file shrank: the promised length cannot be kept
        h.close_connection = True


GETS = {"/label": label_page, "/label/queue": queue, "/collect/files": files}
GET_PREFIXES = {"/label/image/": image, "/collect/file/": file}
POSTS = {"/label": post_label, "/label/undo": post_undo, "/label/lease": post_lease}
