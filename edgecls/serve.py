"""`edgecls serve BUNDLE_DIR`: the bundles of a folder over HTTP, for the boards of a fleet.

    GET /bundles/                    {"bundles": [NAME, ...]}
    GET /bundles/NAME/index.json     {"name", "files": [{"file", "bytes", "sha256"}]}
    GET /bundles/NAME/FILE           the file; Range: bytes=N- (206, or 416 past the end)

Each sub-folder of BUNDLE_DIR with a manifest.json is a bundle; its files are the regular files
directly in it whose names do not start with a dot. The index is computed here from the files as
they are (cached by size and modification time), so it guards the transfer; what guards the
bundle is on the board: the rollout pins manifest.json's sha256, the manifest pins every
artifact's, and the signature (under --trust) every file. Any web server can serve a bundle too:
a board that gets no index.json fetches manifest.json, the artifacts it lists, labels.txt,
parity.md and bundle.sig.

Never a path outside the folder (plain names only, no links out), bounded like the board's
server: at most MAX_CONNECTIONS connections (MAX_PER_CLIENT from one address; more are answered
503), a socket timeout on every read and write, a token (`--token`) on every request when given.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from edgecls.bundle.folder import sha256
from edgecls.errors import EdgeclsError

MAX_CONNECTIONS = 32
MAX_PER_CLIENT = 8
SOCKET_SECONDS = 20.0  # a read or a write that takes longer ends the connection
MAX_FILES = 256
CHUNK = 1 << 16
PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")  # a bundle or file name
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def bundle_files(folder: Path) -> list[Path]:
    """The files of a bundle folder that are served: regular, directly in it, not hidden."""
    files = sorted(
        p for p in folder.iterdir() if PLAIN.match(p.name) and p.is_file() and not p.is_symlink()
    )
    if len(files) > MAX_FILES:
        raise EdgeclsError(f"{folder}: over {MAX_FILES} files, not a bundle")
    return files


class Index:
    """index.json of each bundle, computed once per content (size, mtime of each file)."""

    def __init__(self):
        self.cache: dict[tuple, tuple[str, int, str]] = {}
        self.lock = threading.Lock()

    def of(self, folder: Path) -> dict:
        entries = []
        for path in bundle_files(folder):
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
            with self.lock:
                known = self.cache.get(key)
            if known is None:
                known = (path.name, st.st_size, sha256(path))
                with self.lock:
                    self.cache[key] = known
            entries.append({"file": known[0], "bytes": known[1], "sha256": known[2]})
        return {"name": folder.name, "files": entries}


class BundleServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, root: Path, host: str, port: int, token: str | None = None):
        self.root, self.token, self.index = Path(root).resolve(), token, Index()
        if not self.root.is_dir():
            raise EdgeclsError(f"{root}: not a folder of bundles")
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.per_client: Counter = Counter()
        self.clients = threading.Lock()
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise EdgeclsError(f"--host {host} --port {port}: cannot listen ({exc})") from None

    def process_request(self, request, client_address):
        client = client_address[0]
        with self.clients:
            admitted = self.per_client[client] < MAX_PER_CLIENT and self.slots.acquire(False)
            if admitted:
                self.per_client[client] += 1
        if not admitted:
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.clients:
                self.per_client[client_address[0]] -= 1
                if self.per_client[client_address[0]] <= 0:
                    del self.per_client[client_address[0]]
                self.slots.release()

    def handle_error(self, request, client_address):
        """A client that went away or was too slow is no news on the console."""

    def bundle(self, name: str) -> Path | None:
        """BUNDLE_DIR/NAME if it is a bundle folder inside the root (no link out of it)."""
        if not PLAIN.match(name):
            return None
        folder = (self.root / name).resolve()
        if folder.parent != self.root or not (folder / "manifest.json").is_file():
            return None
        return folder


class _Handler(BaseHTTPRequestHandler):
    server: BundleServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_SECONDS

    def log_message(self, format, *args):  # no access log
        pass

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if not self._allowed():
            return self._send(401, {"error": "give 'Authorization: Bearer TOKEN'"})
        parts = unquote(self.path.partition("?")[0]).split("/")
        if parts[:2] != ["", "bundles"] or len(parts) > 4:
            return self._send(404, {"error": "not found"})
        if len(parts) == 2 or parts[2:] == [""]:
            names = sorted(p.name for p in self.server.root.iterdir() if self.server.bundle(p.name))
            return self._send(200, {"bundles": names})
        folder = self.server.bundle(parts[2])
        file = parts[3] if len(parts) == 4 else ""
        if folder is None or not (file == "index.json" or PLAIN.match(file)):
            return self._send(404, {"error": "no such bundle or file"})
        if file == "index.json":
            return self._send(200, self.server.index.of(folder))
        path = folder / file
        if path not in bundle_files(folder):
            return self._send(404, {"error": "no such file in the bundle"})
        self._file(path)

    def _allowed(self) -> bool:
        token = self.server.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _file(self, path: Path) -> None:
        with open(path, "rb") as f:
            size = path.stat().st_size
            m = RANGE.match(self.headers.get("Range", "").strip())
            start = int(m[1]) if m else 0
            end = min(int(m[2]), size - 1) if m and m[2] else size - 1
            if m and (start >= size or end < start):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            self.send_response(206 if m else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            if m:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                self.wfile.write(chunk)
                left -= len(chunk)


def serve(root: Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          ready=None) -> None:  # fmt: skip
    """Serve until interrupted; `ready(server)` once listening (the CLI prints the address)."""
    server = BundleServer(root, host, port, token)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
