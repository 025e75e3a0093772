"""A board on a factory network (issue 39): no secret in any record, log or error line, and no
network client can starve the HTTP server. Real parts: the HTTP sink's own server, raw sockets
for clients that never finish or never read, the CLI for error lines, a live MJPEG camera behind
a URL with a password, and one run of the real loop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mjpeg_server import MjpegServer, free_port
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.errors import EdgeclsError, SourceUnavailable
from edgecls.redact import redact
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.records import Identity, Record, Summary
from edgecls.runtime.sinks import SinkContext, build_sinks, http_view
from edgecls.runtime.sources import open_source

SECRET = "s3cret"
ID = Identity("casting", "model_int8.tflite", "ab" * 32, ("ok", "def"))


def config(**options):
    return LoopOptions(bundle=Path("b"), headless=True, **options).to_config()


def context(logs: list | None = None) -> SinkContext:
    logs = [] if logs is None else logs
    return SinkContext(
        summary=Summary(), stop=threading.Event(), log=logs.append, identity=ID, live=False
    )


def record(i: int, image: np.ndarray | None = None) -> Record:
    return Record(
        frame=i, time=time.time(), label="ok", top="ok", confidence=0.9, probs=(0.9, 0.1),
        latency_ms=1.5, source="rtsp://cam/x", identity=ID,
        image=np.full((48, 64, 3), i % 256, np.uint8) if image is None else image,
    )  # fmt: skip


@contextlib.contextmanager
def http_sink(logs: list | None = None, **options):
    port = free_port()
    sinks = build_sinks(config(http=f"127.0.0.1:{port}", **options), context(logs)).open()
    try:
        yield next(r.sink for r in sinks.runners if isinstance(r.sink, http_view.HttpSink)), port
    finally:
        sinks.close()


def get(port: int, path: str, method: str = "GET", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def view(port: int, frames: int = 0) -> bytes:
    """The live view's answer, read up to its first `frames` frames (a stream never ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: board\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got or got.count(b"Content-Type: image/jpeg") < frames:
            if not (chunk := s.recv(1 << 16)):
                break
            got += chunk
    return got


def metric(port: int, name: str) -> float:
    body = get(port, "/metrics")[2].decode()
    return next(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name))


def wait_for(predicate, seconds: float = 5.0) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "errors", "records"),
    [
        ("rtsp://admin:s3cret@cam:554/h264", "rtsp://admin:***@cam:554/h264", "rtsp://cam:554/h264"),
        ("rtsp://admin:p@s3cret@cam/x", "rtsp://admin:***@cam/x", "rtsp://cam/x"),  # raw "@"
        ("mqtt://u:ab/s3cret+=@host:1883/x", "mqtt://u:***@host:1883/x", "mqtt://host:1883/x"),
        ("https://s3cret@cam/snap.jpg", "https://***@cam/snap.jpg", "https://cam/snap.jpg"),
        ("http://cam/a.mjpg?user=ops&password=s3cret&token=s3cret&x=1",
         "http://cam/a.mjpg?user=ops&password=***&token=***&x=1",
         "http://cam/a.mjpg?user=ops&password=***&token=***&x=1"),
        ("rtspsrc location=rtsp://a:s3cret@10.0.0.5/x ! decodebin ! appsink",
         "rtspsrc location=rtsp://a:***@10.0.0.5/x ! decodebin ! appsink",
         "rtspsrc location=rtsp://10.0.0.5/x ! decodebin ! appsink"),
        ("mqtt://u:s3cret@[::1/x", "mqtt://u:***@[::1/x", "mqtt://[::1/x"),  # not even a URL
        ("http://cam/path@x?monkey=1", "http://cam/path@x?monkey=1", "http://cam/path@x?monkey=1"),
        ("/videos/line@2.mp4", "/videos/line@2.mp4", "/videos/line@2.mp4"),
        ("0", "0", "0"),
    ],
)  # fmt: skip
def test_one_redaction_masks_passwords_in_urls_and_text(text, errors, records):
    assert redact(text) == errors
    assert redact(text, keep_user=False) == records


def test_a_camera_url_with_a_password_is_read_but_never_named(tmp_path):
    frames = [np.full((48, 64, 3), v, np.uint8) for v in (40, 120, 200)]
    with MjpegServer(frames, fps=25) as cam:
        url = cam.url.replace("http://", f"http://admin:{SECRET}@")
        source = open_source(url)
        try:
            assert source.read().image is not None  # OpenCV got the real URL
            assert source.name == cam.url  # records, logs and /latest get this one
        finally:
            source.close()
    with pytest.raises(SourceUnavailable) as e:  # nothing listens there
        open_source(f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/x")
    assert SECRET not in str(e.value) and "--source rtsp://127.0.0.1:" in str(e.value)
    with pytest.raises(EdgeclsError, match=r"--source srt://admin:\*\*\*@cam/x: not found") as e:
        open_source(f"srt://admin:{SECRET}@cam/x")
    with pytest.raises(EdgeclsError) as e:  # pip's OpenCV has no GStreamer; either way, no secret
        open_source(f"rtspsrc location=rtsp://a:{SECRET}@127.0.0.1:1/x ! decodebin ! appsink")
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mqtt", f"mqtt://u:{SECRET}@host:99999/x"], "the port is not a number"),
        (["--mqtt", f"mqtt://u:{SECRET}@host/line/+/x"], "wildcard"),
        (["--mqtt", f"mqtt://u:{SECRET}@host/x", "--mqtt-ca", __file__], "--mqtt-ca is for TLS"),
        (["--mqtt", f"mqtt://u:{SECRET}@[::1/x"], "not a valid URL"),
        (["--mqtt", f"http://u:{SECRET}@host/x"], "use mqtt://"),
        # a base64 password from an EnvironmentFile: its "/" would end the host
        (["--mqtt", f"mqtt://u:ab/{SECRET}+@host/x"], "percent-encode / ? #"),
    ],
)
def test_mqtt_errors_never_print_the_password(args, says):
    result = CliRunner().invoke(app, ["run", "b", "--headless", *args])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: --mqtt") and says in line and "\n" not in line, line
    assert SECRET not in result.output and "u:***@" in line


def test_a_password_from_the_device_files_environment_is_not_printed(tmp_path):
    device = tmp_path / "device.yaml"
    device.write_text("bundle: b\nheadless: true\nmqtt: mqtt://u:${EDGECLS_T_PW}@h:70000/line\n")
    result = CliRunner().invoke(app, ["run", "--config", str(device)], env={"EDGECLS_T_PW": SECRET})
    assert result.exit_code == 2 and "error: --mqtt mqtt://u:***@h:70000/line" in result.output
    assert SECRET not in result.output
    # a good URL keeps the password for the broker, and out of the config's printed form
    cfg = config(mqtt=f"mqtt://u:{SECRET}@h/line", http="8080", http_token=SECRET)
    assert cfg.mqtt.password == SECRET and cfg.http.token == SECRET
    assert SECRET not in repr(cfg)


# --- binding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.168.1.20", "board.local"])
def test_the_network_without_auth_is_refused(host):
    with pytest.raises(EdgeclsError) as e:
        config(http=f"{host}:8080")
    message = str(e.value)
    assert message.startswith(f"--http {host}:8080 ") and "\n" not in message
    for option in ("--http-token", "--http-user", "--http-insecure"):
        assert option in message
    result = CliRunner().invoke(app, ["run", "b", "--headless", "--http", f"{host}:8080"])
    assert result.exit_code == 2 and result.output.startswith(f"error: --http {host}:8080")


def test_loopback_or_auth_or_http_insecure_serves(capfd):
    for options in (
        {"http": "8080"},
        {"http": "127.0.0.2:8080"},
        {"http": "localhost:8080"},
        {"http": "[::1]:8080"},
        {"http": "0.0.0.0:8080", "http_token": "t0k"},
        {"http": "0.0.0.0:8080", "http_user": "ops:pw"},
    ):
        assert config(**options).http.port == 8080
    port, logs = free_port(), []
    cfg = config(http=f"0.0.0.0:{port}", http_insecure=True)
    sinks = build_sinks(cfg, context(logs)).open()
    try:
        assert get(port, "/metrics")[0] == 200  # served, without auth, as asked
    finally:
        sinks.close()
    warnings = [m for m in logs if m.startswith("warning: http:")]
    assert len(warnings) == 1 and "without auth (--http-insecure)" in warnings[0], logs
    quiet = []
    sinks = build_sinks(config(http=f"0.0.0.0:{port}", http_token="t0k"), context(quiet)).open()
    sinks.close()
    assert not [m for m in quiet if "warning" in m], quiet
    assert capfd.readouterr().err == ""


# --- the HTTP server is bounded ---------------------------------------------------------------


def test_viewers_that_never_read_are_dropped_and_a_fifth_gets_in(monkeypatch):
    monkeypatch.setattr(http_view, "WRITE_SECONDS", 1.0)
    monkeypatch.setattr(http_view, "STREAM_SNDBUF", 8192)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)  # ~100 KB JPEG
    with http_sink() as (sink, port):
        fed = threading.Event()

        def feed():
            i = 0
            while not fed.is_set():
                sink.handle(record(i, np.roll(noise, i, axis=1)))
                i += 1
                time.sleep(0.03)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        hogs = []
        for _ in range(http_view.MAX_VIEWERS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: board\r\n\r\n")
            hogs.append(s)
        try:
            assert wait_for(lambda: sink.state.viewers == http_view.MAX_VIEWERS)
            assert view(port).startswith(b"HTTP/1.1 503")  # the view is full ...
            assert wait_for(lambda: sink.state.viewers == 0)  # ... until the hogs are dropped
            assert view(port, frames=2).startswith(b"HTTP/1.1 200")
        finally:
            fed.set()
            feeder.join()
            for s in hogs:
                s.close()
        assert sink.counts.timeouts >= http_view.MAX_VIEWERS
        assert metric(port, "edgecls_http_timeouts_total") >= http_view.MAX_VIEWERS


def test_half_sent_requests_time_out_and_hold_no_threads(monkeypatch, capfd):
    monkeypatch.setattr(http_view, "REQUEST_SECONDS", 0.5)
    monkeypatch.setattr(http_view, "MAX_CONNECTIONS", 16)
    with http_sink() as (sink, port):
        before = threading.active_count()
        clients, peak = [], 0
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            with contextlib.suppress(OSError):  # refused ones may be closed already
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: board\r\n")  # no blank line: never ends
            clients.append(s)
            peak = max(peak, threading.active_count())
        assert peak <= before + 16
        assert wait_for(lambda: threading.active_count() <= before, 3.0), threading.active_count()
        # a client that sends a byte at a time (slowloris) is cut off at the deadline too
        with socket.create_connection(("127.0.0.1", port), timeout=5) as drip:
            start, closed = time.monotonic(), False
            for byte in b"GET /metrics HTTP/1.1\r\nHost: b\r\nX-Padding: " + b"a" * 100:
                try:
                    drip.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.05)
            if not closed:
                with contextlib.suppress(OSError):
                    closed = drip.recv(100) == b""
            assert closed and time.monotonic() - start < 3.0
        for s in clients:
            s.close()
        assert get(port, "/metrics")[0] == 200  # served again
        # each half-sent request was refused at once, timed out, or (a SYN retry of a full
        # backlog that reached a free slot late) was still waiting when its client left
        c = sink.counts
        assert c.refused > 0 and c.refused + c.timeouts + c.disconnects >= 200, c
        assert metric(port, "edgecls_http_refused_total") == sink.counts.refused
    assert capfd.readouterr().err == ""


def test_disconnects_are_quiet_and_counted(capfd):
    with http_sink() as (sink, port):
        sink.handle(record(1))

        def rude(request: bytes, read: int = 0) -> None:
            """Send, maybe read a little, then reset the connection (SO_LINGER 0)."""
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(request)
            if read:
                s.recv(read)
            s.close()

        rude(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", read=10)  # a viewer that leaves mid-stream
        rude(b"GET /metr")  # half a request line
        rude(b'POST /trigger HTTP/1.1\r\nHost: b\r\nContent-Length: 100\r\n\r\n{"id":')
        for _ in range(3):  # a reset while the answer is being written
            rude(b"GET /latest HTTP/1.1\r\nHost: b\r\n\r\n" * 50)
        assert wait_for(lambda: sink.counts.disconnects >= 3)
        assert wait_for(lambda: sink.state.viewers == 0)
        assert metric(port, "edgecls_http_disconnects_total") >= 3
        assert sink.counts.errors == 0
    assert capfd.readouterr().err == ""  # no ConnectionResetError/BrokenPipeError tracebacks


def test_post_is_bounded_like_get(monkeypatch):
    monkeypatch.setattr(http_view, "REQUEST_SECONDS", 0.5)
    with http_sink() as (_, port):
        # answered from the headers alone, the body never read (the client's is not sent here,
        # so the answer is not lost to a reset of unread bytes)
        for length in (f"Content-Length: {http_view.MAX_TRIGGER_BODY + 1}", "Content-Length: -1",
                       "Transfer-Encoding: chunked"):  # fmt: skip
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"POST /trigger HTTP/1.1\r\nHost: b\r\n{length}\r\n\r\n".encode())
                answer = b""
                while chunk := s.recv(1 << 16):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 413") and b"at most 4096 bytes" in answer, length
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"POST /trigger HTTP/1.1\r\nHost: b\r\nContent-Length: 50\r\n\r\n{")
            start = time.monotonic()
            assert slow.recv(100) == b"" and time.monotonic() - start < 3.0  # cut off
        # a body within bounds is read, and answered (no --part-trigger here: 404)
        status, _, body = get(port, "/trigger", "POST")
        assert status == 404 and b"--part-trigger http" in body
        big = {"X-Big": "a" * (http_view.MAX_REQUEST_BYTES + 10)}  # headers over the budget
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
            get(port, "/metrics", headers=big)


def test_head_answers_every_get_path_without_a_body():
    with http_sink() as (sink, port):
        for path in ("/latest", "/health", "/metrics", "/nope", "/?fps=100"):
            got, head = get(port, path), get(port, path, "HEAD")
            assert head[0] == got[0] and head[2] == b"", path
            assert head[1]["Content-Type"] == got[1]["Content-Type"], path
        status, headers, body = get(port, "/", "HEAD")
        assert status == 200 and body == b"" and headers["Content-Type"].startswith("multipart/")
        assert sink.state.viewers == 0  # a HEAD holds no viewer's slot
        sink.handle(record(7))
        status, headers, body = get(port, "/latest", "HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
    with http_sink(http_token="t0k") as (sink, port):
        assert get(port, "/metrics", "HEAD")[0] == 401
        assert get(port, "/metrics", "HEAD", {"Authorization": "Bearer t0k"})[0] == 200
        assert get(port, "/health", "HEAD")[0] == 503  # open, as GET; no frame yet


# --- one run of the real loop -----------------------------------------------------------------


def test_a_run_on_a_camera_url_with_a_password_writes_it_nowhere(int8_bundle, tmp_path):
    from edgecls.runtime.loop import run

    frames = [np.random.default_rng(i).integers(0, 256, (96, 96, 3), np.uint8) for i in range(4)]
    port, logs, latest = free_port(), [], []
    with MjpegServer(frames, fps=25) as cam:
        url = cam.url.replace("http://", f"http://admin:{SECRET}@")
        cfg = LoopOptions(
            bundle=int8_bundle, source=url, headless=True, json=True, max_frames=40,
            log_file=tmp_path / "records.jsonl", http=str(port), allow_failed=True,
        ).to_config()  # fmt: skip

        def poll():
            while not latest:
                with contextlib.suppress(OSError):
                    status, _, body = get(port, "/latest")
                    if status == 200:  # 503 until the first frame
                        latest.append(body.decode())
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        summary = run(cfg, log=logs.append)
        latest.append("")  # ends the poller if the run ended first
        poller.join(5)
    assert summary.classified == 40
    written = (tmp_path / "records.jsonl").read_text()
    records = [json.loads(line) for line in written.splitlines()]
    assert {r["source"] for r in records} == {cam.url}
    assert any(f"source: {cam.url}" in m for m in logs), logs  # the start-up line
    assert latest[0] and json.loads(latest[0])["source"] == cam.url
    for text in (written, "\n".join(logs), latest[0]):
        assert SECRET not in text and "admin" not in text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("http://admin:my SPACEPW99@127.0.0.1:18081/stream.mjpg", "SPACEPW99"),
        ("mqtt://bob:my SPACEPW99@h:1883/x", "SPACEPW99"),
        ("http://cam/x?loginpas=PW99&user=a", "PW99"),
        ("http://cam/cgi?usr=a&pwd=PW99", "PW99"),
        ("http://cam/cgi?psw=PW99", "PW99"),
        ("http://cam/#access_token=PW99", "PW99"),
        ("srtsrc uri=srt://h:1 passphrase=PW99 ! decodebin", "PW99"),
        ("rtspsrc location=rtsp://cam/x user-id=a user-pw='QUOTED PW99' ! x", "PW99"),
    ],
)
def test_more_ways_a_password_travels_are_redacted(text, secret):
    from edgecls.redact import redact

    assert secret not in redact(text) and secret not in redact(text, keep_user=False)


def test_a_log_line_cannot_be_forged_by_a_name():
    from edgecls.redact import one_line

    line = one_line("skipped c\nerror: FAKE\x1b[31mred.jpg \ud800")
    assert "\n" not in line and "\x1b" not in line and "\\n" in line and "\\x1b" in line
    line.encode("utf-8")  # no lone surrogate left to break a journal or an OPC UA string


def test_log_file_and_device_file_that_are_fifos_are_refused_not_waited_on(tmp_path):
    from typer.testing import CliRunner

    from edgecls.cli import app

    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    ctx = context()
    with pytest.raises(EdgeclsError, match=r"--log-file .*x\.fifo: not a regular file"):
        build_sinks(config(log_file=str(fifo)), ctx).open()
    result = CliRunner().invoke(app, ["run", "--config", str(fifo)])
    assert result.exit_code == 2 and "a FIFO, not a regular file" in result.output


def test_one_host_cannot_take_every_connection():
    """Idle connections from one address fill only its own share: another host (127.0.0.2 is
    this machine under another address) still gets its /metrics, a watchdog its /health."""
    with http_sink() as (sink, port):
        idle = [
            socket.create_connection(("127.0.0.1", port), timeout=5)
            for _ in range(http_view.MAX_CONNECTIONS + 8)
        ]
        try:
            assert wait_for(lambda: sink.counts.refused >= 8, 3.0)
            with socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
            ) as other:
                other.sendall(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                reply = other.recv(64)
        finally:
            for s in idle:
                s.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply
