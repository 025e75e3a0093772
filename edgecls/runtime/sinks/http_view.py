"""HTTP on the board (stdlib only): `/stream` a live MJPEG view with the overlay (`?fps=N`), `/`
the home page for a browser (Accept: text/html) and the same stream for any other client (OpenCV,
VLC, ffmpeg, an NVR), `/latest` the last record as JSON, `/metrics` in Prometheus text format,
`/health` for watchdogs and load balancers (200 while frames flow, 503 once the source has
stalled), `POST /trigger` a part trigger; with --collect the labelling page and the collection's
files (http_label.py). Binds 127.0.0.1 unless told otherwise; a bearer token or basic auth guards
every path but /health (beyond loopback one is required, or --http-insecure), and a browser may
trade `?token=` for a cookie (http_auth.py). HEAD answers every GET path.

Bounded, as anyone on the plant network may reach it: at most MAX_CONNECTIONS connections (a
thread each; more are answered 503 and closed), a request must arrive whole within
REQUEST_SECONDS and MAX_REQUEST_BYTES, every write must go out within WRITE_SECONDS (a viewer that
does not read is dropped). Clients that go away or are dropped are counted on /metrics, never
printed: the journal is not theirs to fill."""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import select
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import cv2

from edgecls.errors import EdgeclsError
from edgecls.runtime.parts.triggers import plc_fields
from edgecls.runtime.records import Decision, PartRecord, Record
from edgecls.runtime.sinks import SINKS, Sink, SinkContext, http_deploy, http_label, http_pages
from edgecls.runtime.sinks.http_auth import (
    credentials,
    cross_site,
    login_cookie,
    token_matches,
    without_token,
)
from edgecls.runtime.sinks.metrics import prometheus_text
from edgecls.runtime.sinks.overlay import draw

MAX_VIEWERS = 4
# the live view is for people: more frames only cost the board CPU (a JPEG is ~1 ms at 640x480);
# a viewer may ask for another rate, /?fps=N (as Frigate's MJPEG feed, whose default is 3); at
# least one frame every 2 s, so a viewer that left is noticed and its slot freed
VIEW_FPS, MIN_VIEW_FPS, MAX_VIEW_FPS = 5.0, 0.5, 30.0
BOUNDARY = "edgeclsframe"
MAX_TRIGGER_BODY = 4096  # a POST's JSON body: the PLC's id and encoder count, a label
# the bounds on clients (module constants, read at each use, so a test can shrink them)
MAX_CONNECTIONS = 32  # open connections, each a thread; beyond: 503 and closed at once
MAX_PER_CLIENT = 8  # of those, from one address
REQUEST_SECONDS = 5.0  # a request line, its headers and body in all; also an idle keep-alive
WRITE_SECONDS = 10.0  # each write (a response, a frame) in all: a viewer that does not read
MAX_REQUEST_BYTES = 16384 + MAX_TRIGGER_BODY  # a request's head and body together
STREAM_SNDBUF = 1 << 17  # a live view's send buffer: a viewer that stops reading fills it soon
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class HttpCounts:
    """What the server did with clients that misbehaved or left, for /metrics."""

    disconnects: int = 0
    timeouts: int = 0
    refused: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def counters(self) -> list[tuple[str, str, int]]:
        """(metric name, help, value), as prometheus_text takes extra counters."""
        return [
            ("edgecls_http_disconnects_total", "HTTP clients that went away mid-request or "
             "mid-response.", self.disconnects),
            ("edgecls_http_timeouts_total", "HTTP clients dropped for being too slow: a request "
             "not whole in time, a viewer that did not read.", self.timeouts),
            ("edgecls_http_refused_total", "HTTP connections refused beyond the limit of open "
             "connections.", self.refused),
            ("edgecls_http_errors_total", "HTTP requests that failed inside the server.",
             self.errors),
        ]  # fmt: skip


class LiveState:
    """The newest record and its JPEG (encoded once, by the first viewer that wants it)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.record: Record | None = None
        self.decision: Decision | None = None
        self.part: PartRecord | None = None
        self.seq = 0
        self.jpeg: tuple[int, bytes] = (0, b"")
        self.viewers = 0

    def update(self, event) -> None:
        with self.cond:
            if isinstance(event, Decision):
                self.decision = event
                return
            if isinstance(event, PartRecord):  # the last frame is drawn again, with it
                self.part = event
            else:
                self.record = event
            self.seq += 1
            self.cond.notify_all()


class HttpSink(Sink):
    name = "http"
    needs = frozenset({"image"})
    # frames at most 30 a second (the view shows <= 30, /latest lags < 35 ms), so a fast loop does
    # not hand over frames nobody will see; decisions always
    rate = 30.0
    inline = True  # handle() only swaps the newest record in; the viewers' threads encode it

    def __init__(self, config):
        self.config = config.http
        self.state = LiveState()
        self.counts = HttpCounts()
        self.server: _Server | None = None
        self.port: int | None = None
        self.closed = threading.Event()  # ends the live views when the run ends

    def open(self, context: SinkContext) -> None:
        handler = type("Handler", (_Handler,), {"sink": self, "context": context})
        host, port = self.config.host, self.config.port
        server = _Server
        if ":" in host:  # an IPv6 address ([::1]:8080, [::]:8080)
            server = type("Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self.server = server((host, port), handler, self)
        except OSError as exc:
            what = {
                errno.EADDRINUSE: "choose another port",
                errno.EACCES: "a port below 1024 needs privileges: choose one above it",
            }.get(exc.errno, "check the host")
            raise EdgeclsError(
                f"--http {_shown(host)}:{port}: cannot listen ({exc.strerror}); {what}"
            ) from None
        self.port = self.server.server_address[1]
        self.context = context
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        url = f"http://{_shown(self.config.host)}:{self.port}/"
        context.log(f"http: live view on {url} (/stream, /latest, /metrics, /health)")
        if self.config.insecure and not (self.config.token or self.config.user):
            context.log(
                f"warning: http: {url} serves the live view and every record without auth "
                "(--http-insecure): anyone who reaches this port sees them; give --http-token"
            )

    def handle(self, event) -> None:
        self.state.update(event)

    def frame_jpeg(self) -> tuple[int, bytes]:
        """The newest frame with its overlay, as JPEG; encoded once per frame."""
        s = self.state
        with s.cond:
            record, seq, cached, part = s.record, s.seq, s.jpeg, s.part
        if cached[0] == seq or record is None or record.image is None:
            return cached
        summary = self.context.summary  # the loop's rate, as on /metrics: the view samples it
        image = draw(
            record, self.context.triggers, summary.fps(), summary.drift, part, summary.shadow
        )
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            with s.cond:
                s.jpeg = (seq, buf.tobytes())
        return s.jpeg

    def close(self) -> None:
        self.closed.set()
        if self.server is not None:
            with self.state.cond:
                self.state.cond.notify_all()
            self.server.shutdown()
            self.server.server_close()  # does not wait for clients: each ends by its timeouts


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them; the rest are answered 503 and
    closed by the accepting thread, which never waits on a client."""

    daemon_threads = True
    block_on_close = False  # a stuck client must not hold up the end of the run
    request_queue_size = 64  # a burst of connections is accepted (and refused) promptly

    def __init__(self, address, handler, sink: HttpSink):
        self.sink = sink
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.per_client: Counter = Counter()  # open connections per client address
        self.clients = threading.Lock()
        self.said: set[type] = set()  # the kinds of our own faults already logged
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._admit(client_address[0]):
            self.sink.counts.add("refused")
            with contextlib.suppress(OSError):
                request.setblocking(False)  # what fits in the socket's buffer, or nothing
                request.send(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (out of threads): its slot is free again
            self._leave(client_address[0])
            raise

    def _admit(self, client: str) -> bool:
        """A slot, unless all are taken or this client holds MAX_PER_CLIENT of them already: one
        host that opens connections and sends nothing cannot lock out the rest (a watchdog's
        /health, a viewer, the PLC's POST /trigger)."""
        with self.clients:
            if self.per_client[client] >= MAX_PER_CLIENT or not self.slots.acquire(blocking=False):
                return False
            self.per_client[client] += 1
            return True

    def _leave(self, client: str) -> None:
        with self.clients:
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]
            self.slots.release()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._leave(client_address[0])

    def handle_error(self, request, client_address):
        """A client's fault is counted, not printed (socketserver prints a traceback on stderr,
        the journal, for each); a fault of ours is one warning line per kind."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            self.sink.counts.add("disconnects" if isinstance(exc, ConnectionError) else "timeouts")
            return
        self.sink.counts.add("errors")
        if type(exc) not in self.said:
            self.said.add(type(exc))
            self.sink.context.log(
                f"warning: http: a request failed ({type(exc).__name__}: {exc}); counted on "
                "/metrics as edgecls_http_errors_total, said once"
            )


class _RequestReader(io.RawIOBase):
    """The socket's reading side with a deadline and a byte budget per request: a client that
    sends a byte a second (slowloris) or endless headers ends at REQUEST_SECONDS or
    MAX_REQUEST_BYTES, not when it pleases."""

    def __init__(self, sock: socket.socket):
        self.sock, self.raw = sock, sock.makefile("rb", buffering=0)
        self.start()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()
        super().close()

    def start(self) -> None:
        self.until = time.monotonic() + REQUEST_SECONDS
        self.budget, self.got = MAX_REQUEST_BYTES, 0

    def readinto(self, b) -> int | None:
        left = self.until - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no whole request within {REQUEST_SECONDS:g} s")
        if self.got >= self.budget:
            raise ConnectionAbortedError(f"a request over {self.budget} bytes")
        self.sock.settimeout(left)
        n = self.raw.readinto(memoryview(b)[: self.budget - self.got])
        self.got += n or 0
        return n


class _Handler(BaseHTTPRequestHandler):
    sink: HttpSink
    context: SinkContext
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.rfile.close()  # the stdlib's reader, replaced by one with a deadline and a budget
        self.reader = _RequestReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)
        self.served = 0  # requests on this connection
        self.wrote = False  # a response of the current request has begun

    def handle_one_request(self):
        self.reader.start()
        self.wrote = False
        try:
            super().handle_one_request()
        except ConnectionError:  # reset, broken pipe, over budget: gone, and counted
            self.sink.counts.add("disconnects")
            self.close_connection = True
        self.served += 1

    def log_error(self, format, *args):
        """The stdlib's one report of a request that timed out (it answers it itself): counted,
        unless it was a kept-alive connection that simply sent nothing more."""
        timed_out = bool(args) and isinstance(args[0], TimeoutError)
        if timed_out and (self.reader.got or self.wrote or not self.served):
            self.sink.counts.add("timeouts")

    def log_message(self, format, *args):  # no access log on stderr
        pass

    def end_headers(self):
        # from here the request is read and the answer goes out: the write deadline applies
        self.connection.settimeout(WRITE_SECONDS)
        self.wrote = True
        super().end_headers()

    def do_GET(self):
        path, _, query = self.path.partition("?")
        self.query = parse_qs(query, keep_blank_values=True)
        if "token" in self.query and self.sink.config.token:
            return self._login(path, query)
        if path != "/health" and not self._authorised():
            return
        route = self._route(path)
        if route is None:
            where = "/, /stream, /latest, /metrics, /health, /label"
            return self._send(404, "application/json", {"error": f"no {path}; try {where}"})
        route()

    def _route(self, path: str):
        routes = {
            "/": self._home,
            "/stream": self._stream,
            "/latest": self._latest,
            "/metrics": self._metrics,
            "/health": self._health,
        }
        if path in routes:
            return routes[path]
        if path in http_label.GETS:
            return functools.partial(http_label.GETS[path], self)
        for prefix, route in http_label.GET_PREFIXES.items():
            if path.startswith(prefix):
                return functools.partial(route, self, path[len(prefix) :])
        return None

    def _home(self) -> None:
        """A browser gets the home page; any other client (OpenCV, VLC, an NVR) the stream."""
        if "text/html" not in self.headers.get("Accept", ""):
            return self._stream()
        page = http_pages.home_page(self.context.identity, self.context.collect is not None)
        http_pages.send_page(self, page)

    def do_HEAD(self):
        """What GET would answer, without the body (the live view: its headers only)."""
        self.do_GET()

    def do_POST(self):
        path = self.path.partition("?")[0]
        body = self._body()  # read first, so a refused request leaves nothing on the connection
        if body is None or not self._authorised():
            return
        if (refused := cross_site(self.headers)) is not None:
            return self._send(403, "application/json", {"error": refused})
        if path in http_label.POSTS:
            return http_label.POSTS[path](self, body)
        if path == "/deploy":
            return http_deploy.deploy(self, body)
        station = self.context.station
        if path != "/trigger" or station is None or not station.config.accepts("http"):
            what = "POST /trigger needs --part-trigger http" if path == "/trigger" else f"no {path}"
            return self._send(404, "application/json", {"error": what})
        part = station.trigger("http", *plc_fields(body))
        if part is None:
            return self._send(503, "application/json", {"error": "the station is stopping"})
        self._send(202, "application/json", {"part": part.id, "plc_id": part.plc_id})

    def _body(self) -> str | None:
        """The request's body, at most MAX_TRIGGER_BODY bytes with a Content-Length; None once
        answered (too long, chunked) or when the client went away before sending all of it."""
        length = self.headers.get("Content-Length", "0")
        chunked = "Transfer-Encoding" in self.headers
        if chunked or not length.isdigit() or int(length) > MAX_TRIGGER_BODY:
            self.close_connection = True
            error = f"give a JSON body of at most {MAX_TRIGGER_BODY} bytes with a Content-Length"
            return self._send(413, "application/json", {"error": error})
        body = self.rfile.read(int(length))
        if len(body) < int(length):  # a half-sent trigger is no trigger
            self.sink.counts.add("disconnects")
            self.close_connection = True
            return None
        return body.decode("utf-8", "replace")

    def _authorised(self) -> bool:
        """The header's bearer token or basic auth, or a browser's cookie; else 401. Sets `via`,
        how the request was authorised (a label's history names it)."""
        cfg = self.sink.config
        self.via = credentials(self.headers, cfg.token, cfg.user)
        if self.via is not None:
            return True
        self._refuse()
        return False

    def _refuse(self) -> None:
        self.send_response(401)
        if self.sink.config.user:
            self.send_header("WWW-Authenticate", 'Basic realm="edgecls"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _login(self, path: str, query: str) -> None:
        """`?token=TOKEN` (a browser cannot send the header when following a link): the right one
        is traded for a cookie and the same URL without it; a wrong one is refused as always."""
        if not token_matches(self.query["token"][-1], self.sink.config.token):
            return self._refuse()
        self.send_response(303)
        self.send_header("Location", without_token(path, query))
        self.send_header("Set-Cookie", login_cookie(self.sink.config.token))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, code: int, ctype: str, body, headers: dict | None = None) -> None:
        data = (
            body
            if isinstance(body, bytes)
            else (json.dumps(body).encode() if not isinstance(body, str) else body.encode())
        )
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _latest(self) -> None:
        s = self.sink.state
        with s.cond:
            record, decision, part = s.record, s.decision, s.part
        if record is None:
            return self._send(503, "application/json", {"error": "no frame classified yet"})
        body = {**record.to_dict(), "fps": round(self.context.summary.fps(), 2)}
        body["frames"] = self.context.summary.frames
        body["drift"] = self.context.summary.drift or None
        body["last_decision"] = decision.to_dict() if decision else None
        if self.context.station is not None:
            body["last_part"] = part.to_dict() if part else None
        if self.context.models is not None:  # a candidate's shadow, while one runs and after
            body["shadow"] = self.context.summary.shadow or None
        self._send(200, "application/json", body)

    def _metrics(self) -> None:
        # the loop's own rate: the view sees at most 30 frames a second, the loop may do more
        summary = self.context.summary
        text = prometheus_text(
            summary, self.context.identity, summary.fps(), self.sink.counts.counters()
        )
        self._send(200, "text/plain; version=0.0.4; charset=utf-8", text)

    def _health(self) -> None:
        summary, stall = self.context.summary, self.sink.config.stall_seconds
        last = summary.last_frame
        since = None if last is None else time.monotonic() - last
        if since is None:
            code, status = 503, "starting: no frame yet"
        elif since > stall:
            code, status = 503, f"stalled: no frame for {since:.1f} s (limit {stall:g} s)"
        else:
            code, status = 200, "ok"
        body = {
            "status": status,
            "seconds_since_frame": None if since is None else round(since, 3),
            "frames": summary.frames,
            "reconnects": summary.reconnects,
        }
        self._send(code, "application/json", body)

    def _stream(self) -> None:
        fps = self._view_fps()
        if fps is None:
            return
        if self.command == "HEAD":  # a viewer's headers; no slot, no frames
            return self._stream_headers()
        s = self.sink.state
        with s.cond:
            if s.viewers >= MAX_VIEWERS:
                busy = True
            else:
                busy, s.viewers = False, s.viewers + 1
        if busy:
            return self._send(503, "text/plain", f"at most {MAX_VIEWERS} viewers\n")
        try:
            self._frames(fps)
        except ConnectionError:
            self.sink.counts.add("disconnects")
        except TimeoutError:  # it stopped reading: its slot goes to the next viewer
            self.sink.counts.add("timeouts")
        finally:
            with s.cond:
                s.viewers -= 1
            self.close_connection = True

    def _view_fps(self) -> float | None:
        given = self.query.get("fps", [None])[-1]
        try:
            fps = VIEW_FPS if given is None else float(given)
        except ValueError:
            fps = -1.0
        if MIN_VIEW_FPS <= fps <= MAX_VIEW_FPS:
            return fps
        error = f"fps={given}: give frames a second, {MIN_VIEW_FPS:g} to {MAX_VIEW_FPS:g}"
        self._send(400, "application/json", {"error": error})
        return None

    def _stream_headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()

    def _frames(self, fps: float) -> None:
        s, closed = self.sink.state, self.sink.closed
        # a small send buffer: a viewer that stops reading blocks a write soon, and is dropped
        with contextlib.suppress(OSError):  # a platform that refuses: the write deadline holds
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        self._stream_headers()
        sent, next_at = 0, 0.0
        while not closed.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + 1.0 / fps
            with s.cond:
                s.cond.wait_for(lambda last=sent: s.seq != last or closed.is_set(), timeout=1.0)
            if self._peer_gone():
                raise ConnectionResetError("the viewer left")
            seq, jpeg = self.sink.frame_jpeg()
            if seq == sent or not jpeg:
                continue
            sent = seq
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
            self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            self.wfile.flush()

    def _peer_gone(self) -> bool:
        """Whether the viewer closed its end (noticed while no frame comes: a stalled source)."""
        sock = self.connection
        if not select.select([sock], [], [], 0)[0]:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False


def _shown(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


@SINKS.register("http")
def make(config):
    return HttpSink(config) if config.http else None
