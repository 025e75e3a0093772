"""`edgecls data pull` against a server that speaks the board's collect API (GET /collect/files,
GET /collect/file/PATH with Range) and misbehaves on purpose: a transfer cut by SIGKILL resumes
where it stopped, a corrupted file is refused and deleted, a relabelled frame is moved, nothing
outside --out is written, and a wrong token is one line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecls.cli import app

TOKEN = "s3cret"
NAMES = [f"c-20261207T10000{i}.000000Z-f{i:08d}.jpg" for i in range(4)]


class Board:
    """The collect API of a board, in memory: `files` maps path -> bytes; `corrupt` paths are
    served with one byte flipped; `stall_after` bytes of `stall_path` are sent, then nothing."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.corrupt: set[str] = set()
        self.stall_path, self.stall_after = None, 0
        self.stalled = threading.Event()
        self.ranges: list[tuple[str, str | None]] = []
        handler = type("Handler", (_Handler,), {"board": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stalled.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    board: Board

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            return self.end_headers()
        board = self.board
        if self.path == "/collect/files":
            listing = [
                {"path": p, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for p, d in board.files.items()
            ]
            return self._send(200, json.dumps({"classes": [], "files": listing}).encode())
        path = self.path.removeprefix("/collect/file/")
        if path not in board.files:
            return self._send(404, b"{}")
        data = board.files[path]
        if path in board.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        given = self.headers.get("Range")
        board.ranges.append((path, given))
        start = int(given.removeprefix("bytes=").rstrip("-")) if given else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if path == board.stall_path:
            self.wfile.write(data[start : board.stall_after])
            self.wfile.flush()
            board.stalled.set()
            time.sleep(60)  # the client is killed meanwhile
            return
        self.wfile.write(data[start:])

    def _send(self, code: int, body: bytes):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _files() -> dict[str, bytes]:
    big = os.urandom(600_000)  # large enough that a cut lands inside it
    return {
        f"ok/{NAMES[0]}": os.urandom(3000),
        f"ok/{NAMES[1]}": big,
        f"def/{NAMES[2]}": os.urandom(5000),
    }


@pytest.fixture
def board():
    b = Board(_files())
    yield b
    b.close()


def _pull(board: Board, out: Path, *extra: str):
    args = ["data", "pull", board.url, "--out", str(out), "--token", TOKEN, *extra]
    return CliRunner().invoke(app, args)


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_transfer_killed_mid_file_resumes_where_it_stopped(board, tmp_path):
    out = tmp_path / "line1"
    big = f"ok/{NAMES[1]}"
    board.stall_path, board.stall_after = big, 250_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecls", "data", "pull", board.url, "--out", str(out)],
        env={**os.environ, "EDGECLS_HTTP_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert board.stalled.wait(60), proc.communicate(timeout=5)
    partial = out / "ok" / f".{NAMES[1]}.partial"
    deadline = time.monotonic() + 10
    while (
        not partial.exists() or partial.stat().st_size < 250_000
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert partial.stat().st_size == 250_000  # the bytes that came are kept for the resume
    assert not (out / big).exists()  # and nothing looks whole that is not
    board.stall_path = None
    result = _pull(board, out)
    assert result.exit_code == 0, result.output
    assert (big, "bytes=250000-") in board.ranges  # resumed, not fetched again
    assert _tree(out) == board.files  # every file whole, no .partial left
    assert "1 resumed" in result.output
    again = _pull(board, out)
    assert "0 fetched" in again.output and "3 already here" in again.output


def test_a_corrupted_file_is_refused_and_deleted(board, tmp_path):
    out = tmp_path / "line1"
    bad = f"def/{NAMES[2]}"
    board.corrupt.add(bad)
    result = _pull(board, out)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and bad in errors[0] and "is not what" in errors[0]
    assert bad not in _tree(out) and not list(out.rglob("*.partial"))
    board.corrupt.clear()
    assert _pull(board, out).exit_code == 0 and _tree(out) == board.files


def test_a_frame_relabelled_on_the_board_moves_and_nothing_else_is_touched(board, tmp_path):
    out = tmp_path / "line1"
    assert _pull(board, out).exit_code == 0
    (out / "ok" / "from-the-user.jpg").write_bytes(b"mine")
    board.files[f"def/{NAMES[0]}"] = board.files.pop(f"ok/{NAMES[0]}")  # relabelled there
    result = _pull(board, out)
    assert result.exit_code == 0 and "1 moved" in result.output
    assert not (out / "ok" / NAMES[0]).exists() and (out / "def" / NAMES[0]).is_file()
    assert (out / "ok" / "from-the-user.jpg").read_bytes() == b"mine"


def test_refusals_are_one_line(board, tmp_path):
    out = tmp_path / "line1"
    wrong = CliRunner().invoke(
        app, ["data", "pull", board.url, "--out", str(out), "--token", "nope"]
    )
    assert wrong.exit_code != 0 and "401" in wrong.output and "--token" in wrong.output
    assert "nope" not in wrong.output and not _tree(out)
    board.files = {"../../escape.jpg": b"x", **board.files}
    evil = _pull(board, out)
    assert evil.exit_code != 0 and "not valid" in evil.output
    assert not (tmp_path / "escape.jpg").exists() and not _tree(out)
    gone = CliRunner().invoke(
        app, ["data", "pull", "http://127.0.0.1:9", "--out", str(out), "--token", TOKEN]
    )
    assert gone.exit_code != 0 and "cannot reach the board" in gone.output
