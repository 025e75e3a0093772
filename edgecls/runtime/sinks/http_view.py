"""HTTP on the board (stdlib only): `/` a live MJPEG view with the overlay (`/?fps=N`), `/latest`
the last record as JSON, `/metrics` in Prometheus text format, `/health` for watchdogs and load
balancers (200 while frames flow, 503 once the source has stalled). Binds 127.0.0.1 unless told
otherwise; a bearer token or basic auth guards every path but /health."""

from __future__ import annotations

import base64
import errno
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import cv2

from edgecls.errors import EdgeclsError
from edgecls.runtime.parts.triggers import plc_fields
from edgecls.runtime.records import Decision, PartRecord, Record
from edgecls.runtime.sinks import SINKS, Sink, SinkContext
from edgecls.runtime.sinks.metrics import prometheus_text
from edgecls.runtime.sinks.overlay import draw

MAX_VIEWERS = 4
# the live view is for people: more frames only cost the board CPU (a JPEG is ~1 ms at 640x480);
# a viewer may ask for another rate, /?fps=N (as Frigate's MJPEG feed, whose default is 3); at
# least one frame every 2 s, so a viewer that left is noticed and its slot freed
VIEW_FPS, MIN_VIEW_FPS, MAX_VIEW_FPS = 5.0, 0.5, 30.0
BOUNDARY = "edgeclsframe"
MAX_TRIGGER_BODY = 4096  # POST /trigger: the PLC's id and encoder count, as JSON


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
        self.server: ThreadingHTTPServer | None = None
        self.port: int | None = None
        self.closed = threading.Event()  # ends the live views when the run ends

    def open(self, context: SinkContext) -> None:
        handler = type("Handler", (_Handler,), {"sink": self, "context": context})
        host, port = self.config.host, self.config.port
        server = ThreadingHTTPServer
        if ":" in host:  # an IPv6 address ([::1]:8080, [::]:8080)
            server = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self.server = server((host, port), handler)
        except OSError as exc:
            what = {
                errno.EADDRINUSE: "choose another port",
                errno.EACCES: "a port below 1024 needs privileges: choose one above it",
            }.get(exc.errno, "check the host")
            raise EdgeclsError(
                f"--http {_shown(host)}:{port}: cannot listen ({exc.strerror}); {what}"
            ) from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.context = context
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        context.log(
            f"http: live view on http://{_shown(self.config.host)}:{self.port}/ (/metrics, /health)"
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
        image = draw(record, self.context.triggers, summary.fps(), summary.drift, part)
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
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    sink: HttpSink
    context: SinkContext
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # no access log on stderr
        pass

    def do_GET(self):
        path, _, query = self.path.partition("?")
        self.query = parse_qs(query, keep_blank_values=True)
        if path != "/health" and not self._authorised():
            return
        routes = {
            "/": self._stream,
            "/latest": self._latest,
            "/metrics": self._metrics,
            "/health": self._health,
        }
        route = routes.get(path)
        if route is None:
            return self._send(
                404, "application/json", {"error": f"no {path}; try /, /latest, /metrics, /health"}
            )
        route()

    def do_POST(self):
        path = self.path.partition("?")[0]
        if not self._authorised():
            return
        station = self.context.station
        if path != "/trigger" or station is None or not station.config.accepts("http"):
            what = "POST /trigger needs --part-trigger http" if path == "/trigger" else f"no {path}"
            return self._send(404, "application/json", {"error": what})
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_TRIGGER_BODY:
            self.close_connection = True
            error = f"give a JSON body of at most {MAX_TRIGGER_BODY} bytes"
            return self._send(413, "application/json", {"error": error})
        body = self.rfile.read(int(length)).decode("utf-8", "replace")
        part = station.trigger("http", *plc_fields(body))
        self._send(202, "application/json", {"part": part.id, "plc_id": part.plc_id})

    def _authorised(self) -> bool:
        cfg = self.sink.config
        if not (cfg.token or cfg.user):
            return True
        given = self.headers.get("Authorization", "")
        allowed = []
        if cfg.token:
            allowed.append(f"Bearer {cfg.token}")
        if cfg.user:
            allowed.append("Basic " + base64.b64encode(cfg.user.encode()).decode())
        if any(hmac.compare_digest(given.encode(), a.encode()) for a in allowed):
            return True
        self.send_response(401)
        if cfg.user:
            self.send_header("WWW-Authenticate", 'Basic realm="edgecls"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _send(self, code: int, ctype: str, body) -> None:
        data = (
            body
            if isinstance(body, bytes)
            else (json.dumps(body).encode() if not isinstance(body, str) else body.encode())
        )
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _latest(self) -> None:
        s = self.sink.state
        with s.cond:
            record, decision, part = s.record, s.decision, s.part
        if record is None:
            return self._send(503, "application/json", {"error": "no frame classified yet"})
        body = {**record.to_dict(), "fps": round(self.context.summary.fps(), 2)}
        body["drift"] = self.context.summary.drift or None
        body["last_decision"] = decision.to_dict() if decision else None
        if self.context.station is not None:
            body["last_part"] = part.to_dict() if part else None
        self._send(200, "application/json", body)

    def _metrics(self) -> None:
        # the loop's own rate: the view sees at most 30 frames a second, the loop may do more
        text = prometheus_text(
            self.context.summary, self.context.identity, self.context.summary.fps()
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
        except (BrokenPipeError, ConnectionResetError):
            pass
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

    def _frames(self, fps: float) -> None:
        s, closed = self.sink.state, self.sink.closed
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        sent, next_at = 0, 0.0
        while not closed.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + 1.0 / fps
            with s.cond:
                s.cond.wait_for(lambda last=sent: s.seq != last or closed.is_set(), timeout=1.0)
            seq, jpeg = self.sink.frame_jpeg()
            if seq == sent or not jpeg:
                continue
            sent = seq
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
            self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            self.wfile.flush()


def _shown(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


@SINKS.register("http")
def make(config):
    return HttpSink(config) if config.http else None
