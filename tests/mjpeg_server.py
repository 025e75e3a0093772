"""A local HTTP MJPEG server that plays an IP camera, faults included: it can stall (socket open,
no bytes), drop (close every connection), refuse (503 to newcomers) and come back. Importable by
any test or benchmark:

    with MjpegServer(frames, fps=25) as cam:
        source = open_source(cam.url)
        cam.stall(); ...; cam.resume()
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = "camframe"


class MjpegServer:
    """Serves `frames` (BGR arrays or JPEG bytes) in a loop at `fps` on /stream.mjpg."""

    def __init__(self, frames, fps: float = 25.0, host: str = "127.0.0.1", port: int = 0):
        self.jpegs = [f if isinstance(f, bytes) else _jpeg(f) for f in frames]
        self.interval = 1.0 / fps
        self.mode = "play"  # play | stall | refuse
        self.frames_sent = 0
        self.connections = 0
        self._generation = 0  # bumped by drop(): streams of older generations end
        self._lock = threading.Lock()
        self._closed = threading.Event()
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> MjpegServer:
        self._thread.start()
        return self

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stall(self) -> None:
        """Keep every socket open and send nothing (the stream that hangs a naive reader)."""
        self.mode = "stall"

    def drop(self) -> None:
        """Close every open stream now; new connections are served."""
        with self._lock:
            self._generation += 1

    def refuse(self) -> None:
        """Drop every stream and answer 503 to new ones (the camera is rebooting)."""
        self.mode = "refuse"
        self.drop()

    def resume(self) -> None:
        self.mode = "play"

    def close(self) -> None:
        self._closed.set()
        self.drop()
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self, wfile) -> None:
        with self._lock:
            generation = self._generation
            self.connections += 1
        i = 0
        next_at = time.monotonic()
        while not self._closed.is_set() and generation == self._generation:
            if self.mode != "play":
                time.sleep(0.02)
                continue
            jpeg = self.jpegs[i % len(self.jpegs)]
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
            wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            wfile.flush()
            self.frames_sent += 1
            i += 1
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    server_ref: MjpegServer

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        cam = self.server_ref
        if cam.mode == "refuse":
            self.send_error(503, "camera rebooting")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            cam.serve(self.wfile)
        self.close_connection = True


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
