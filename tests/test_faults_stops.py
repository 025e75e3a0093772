"""Stops, kills and full disks: what a hostile tester (or a service manager, or a power cut) does
to a command mid-work, and the contract it meets.

Each case checks the exit code, the one line that says what happened, and what is on disk
afterwards: no `.NAME.partial-PID` folder nor `/tmp/edgecls-*-PID-*` scratch of a process that
is gone, the reports of what was trained so far, recordings that play. Commands that get a
signal run as real processes (Ctrl-C is SIGINT; systemd's stop is SIGTERM; a closed terminal
SIGHUP); training runs a tiny model on 32 px images so each takes seconds.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_line_outputs import config, context, record, run_sinks
from typer.testing import CliRunner
from videos import write_video

from edgecls import durable
from edgecls.cli import app

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SIZE = "32"
TRAIN = ("--model", "seed-cnn", "--img-size", SIZE, "--no-augment", "--seed", "1")


# --- helpers ------------------------------------------------------------------------------------


def _env(tmp: Path, **extra: str) -> dict:
    """The test's environment with its own temporary folder, so scratch folders are countable."""
    scratch = tmp / "tmp"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(ROOT), **extra}


class Tty:
    """A command with its stdout on a terminal, as a person runs it (rich draws the epochs live),
    read on a thread so the command never blocks on a full terminal."""

    def __init__(self, args: list[str], cwd: Path, env: dict):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecls", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        os.close(slave)
        self.master, self.out = master, b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the command closed its terminal
                return
            if not chunk:
                return
            self.out += chunk

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} (exit {self.proc.poll()}): {self.out[-2000:]}")
            time.sleep(0.05)

    def finish(self, timeout: float = 120.0) -> tuple[int, str]:
        _, errs = self.proc.communicate(timeout=timeout)
        self.reader.join(5)
        os.close(self.master)
        return self.proc.returncode, errs.decode(errors="replace")


def _edgecls(*args: str, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgecls", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


def _wait_until(check, timeout: float = 120.0, what: str = "", proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the command ended first ({proc.communicate()})")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def _scratch(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "tmp").glob("edgecls-*"))


def _error_lines(errs: str) -> list[str]:
    return [line for line in errs.splitlines() if line.startswith(("error:", "interrupted"))]


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.read()[0]:
        n += 1
    cap.release()
    return n


# --- fixtures: a tiny run and its bundle, made once for this file -----------------------------


@pytest.fixture(scope="module")
def tiny_run(insects_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stops") / "run"
    args = ["train", "--data", str(insects_data), *TRAIN, "--epochs", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stops-bundle") / "bundle"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = {a["file"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert {"model_float32.tflite", "model_float32.onnx"} <= files
    return out


# --- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_stop_during_training_writes_the_run_so_far_and_exits_with_the_signal(
    sig, code, insects_data, tmp_path
):
    """SIGTERM killed training at once (no reports, a staging folder left) and Ctrl-C exited 0,
    so `train && export` exported a model cut short. Both now end training at the next step,
    write the run of what was trained so far, and exit 128 + the signal."""
    out = tmp_path / "run"
    args = ["train", "--data", str(insects_data), *TRAIN, "--epochs", "40", "--out", str(out)]
    tty = Tty(args, tmp_path, _env(tmp_path))
    tty.wait_for("epoch 2/40")  # the first epoch is done
    tty.proc.send_signal(sig)
    code_, errs = tty.finish()
    assert code_ == code, errs
    lines = _error_lines(errs)
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({sig.name})"), errs
    assert "holds the model after" in lines[0] and "Traceback" not in errs
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and 1 <= metrics["epochs_run"] < 40
    for name in ("model.keras", "labels.txt", "config.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / ".scratch").exists()
    assert _leftovers(tmp_path) == [] and _scratch(tmp_path) == []


def test_a_stop_during_anomaly_training_leaves_the_earlier_run_as_it_was(
    anomaly_run, casting_data, tmp_path
):
    """An anomaly run is only whole with its threshold, set after the last epoch: a stop before
    writes nothing, and an earlier run at --out stays byte for byte."""
    out = tmp_path / "run"
    shutil.copytree(anomaly_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    good = str(casting_data / "train" / "ok")
    args = ["train", "--task", "anomaly", "--data", good, "--img-size", SIZE, "--epochs", "40"]
    tty = Tty([*args, "--out", str(out)], tmp_path, _env(tmp_path))
    tty.wait_for("epoch 2/40")
    tty.proc.send_signal(signal.SIGTERM)
    code, errs = tty.finish()
    assert code == 143, errs
    lines = _error_lines(errs)
    assert lines == [f"interrupted (SIGTERM): no run was written; {out} is as it was"], errs
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == [] and _scratch(tmp_path) == []


def test_sighup_before_the_first_epoch_ends_leaves_the_earlier_run_as_it_was(
    tiny_run, insects_data, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["train", "--data", str(insects_data), *TRAIN, "--epochs", "40", "--out", str(out)]
    proc = _edgecls(*args, cwd=tmp_path, env=_env(tmp_path))
    _wait_until(lambda: _leftovers(tmp_path), what="the staging folder", proc=proc)
    proc.send_signal(signal.SIGHUP)
    _, errs = proc.communicate(timeout=120)
    assert proc.returncode == 129, errs
    lines = _error_lines(errs)
    assert len(lines) == 1 and "interrupted (SIGHUP): no run was written" in lines[0], errs
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == [] and _scratch(tmp_path) == []


# --- export -------------------------------------------------------------------------------------


def test_sigterm_during_export_leaves_the_bundle_as_it_was_and_nothing_else(
    tiny_run, tiny_bundle, tmp_path
):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _edgecls("export", str(tiny_run), "--out", str(out), cwd=tmp_path, env=_env(tmp_path))
    _wait_until(lambda: _leftovers(tmp_path), what="the export's staging folder", proc=proc)
    proc.send_signal(signal.SIGTERM)
    _, errs = proc.communicate(timeout=120)
    assert proc.returncode == 143, errs
    lines = _error_lines(errs)
    assert len(lines) == 1 and "interrupted (SIGTERM): no bundle was written" in lines[0], errs
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == [] and _scratch(tmp_path) == []


def test_what_a_killed_export_left_is_removed_by_the_next(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    env = _env(tmp_path)
    proc = _edgecls("export", str(tiny_run), "--out", str(out), cwd=tmp_path, env=env)
    _wait_until(lambda: _leftovers(tmp_path), what="the export's staging folder", proc=proc)
    proc.kill()
    proc.wait()
    assert _leftovers(tmp_path) == [f".bundle.partial-{proc.pid}"]
    assert any(name.startswith(f"edgecls-export-{proc.pid}-") for name in _scratch(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", env["TMPDIR"])
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()
    assert _leftovers(tmp_path) == [] and _scratch(tmp_path) == []


def test_leftovers_of_gone_processes_are_swept_and_nothing_else(tmp_path, monkeypatch):
    """Only names edgecls writes, only PIDs that no edgecls process holds: a live writer's
    staging folder, the user's files and an `.old` that is the last whole version all stay."""
    dead, live = _dead_pid(), os.getpid()
    runs = tmp_path / "runs"
    for name in (f".a.partial-{dead}", f".a.partial-{live}", ".a.partial-mine", f".b.old-{dead}"):
        (runs / name).mkdir(parents=True)
    (runs / "a").mkdir()
    (runs / f".b.old-{dead}" / "model.keras").write_text("the last whole run")
    (runs / f".c.old-{dead}").mkdir()
    (runs / "c").mkdir()
    (runs / f".d.json.tmp-{dead}").write_text("{half")
    durable.sweep_leftovers(runs, "a")
    durable.sweep_leftovers(runs, "b")  # missing: its swap died between the renames
    durable.sweep_leftovers(runs, "c")
    durable.write_json_atomic(runs / "d.json", {"ok": True})
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        ["a", "b", "c", "d.json", f".a.partial-{live}", ".a.partial-mine"]
    )
    assert (runs / "b" / "model.keras").read_text() == "the last whole run"
    scratch = tmp_path / "tmp"
    for name in (f"edgecls-export-{dead}-x1", f"edgecls-export-{live}-x2", "edgecls-export-old"):
        (scratch / name).mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    made = durable.new_scratch("export")
    assert made.name.startswith(f"edgecls-export-{live}-")
    assert sorted(p.name for p in scratch.iterdir()) == sorted(
        [f"edgecls-export-{live}-x2", "edgecls-export-old", made.name]
    )


def test_a_writer_in_another_pid_namespace_keeps_its_folders(tmp_path):
    """A container writing into a mounted folder: its PID means nothing here (gone, or another
    program's), but the lock it holds on what it writes does; once released, it is swept."""
    stranger = _dead_pid()  # the container's PID, which names no process here
    runs = tmp_path / "runs"
    staging, scratch = runs / f".a.partial-{stranger}", tmp_path / f"edgecls-export-{stranger}-x"
    for folder in (staging, scratch):
        folder.mkdir(parents=True)
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", LOCK_AND_WAIT, str(folder)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for folder in (staging, scratch)
    ]  # fmt: skip
    try:
        for holder in holders:
            assert holder.stdout.readline().strip() == b"locked"
        durable.sweep_leftovers(runs, "a")
        assert staging.is_dir()  # held: a live writer, whatever its PID says
        assert durable.held_elsewhere(scratch)
    finally:
        for holder in holders:
            holder.communicate(b"", timeout=10)
    durable.sweep_leftovers(runs, "a")
    assert not staging.exists()  # released with its process: swept


LOCK_AND_WAIT = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_stop_signal_never_cuts_a_folder_swap_in_two(tmp_path, monkeypatch):
    """Where the swap takes two renames (no renameat2), a SIGTERM between them is held until the
    new folder is in place, then raised: never a missing run or bundle."""
    new, dest = tmp_path / "new", tmp_path / "dest"
    for folder, text in ((new, "new"), (dest, "old")):
        folder.mkdir()
        (folder / "model.keras").write_text(text)
    monkeypatch.setattr(durable, "_exchange", lambda a, b: False)
    renamed, real = [], os.rename

    def rename(a, b):
        real(a, b)
        renamed.append(b)
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here

    monkeypatch.setattr(durable.os, "rename", rename)
    with durable.StopSignals(), pytest.raises(durable.Interrupted):
        durable.replace_folder(new, dest)
    assert len(renamed) == 2 and (dest / "model.keras").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]


# --- a live source that never answers ----------------------------------------------------------


class SilentServer:
    """Accepts connections and never sends a byte (a camera whose stream hangs)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/silent"
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(
    "sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_stop_while_a_silent_stream_opens_is_a_clean_stop(sig, code, tiny_bundle, tmp_path):
    """The first open of a stream ran in the loop's own thread, inside FFmpeg, where no signal
    handler runs: a stop ended as `error: cannot open`, exit 1. It waits on the stop now."""
    server = SilentServer()
    try:
        proc = _edgecls(
            "run", str(tiny_bundle), "--source", server.url, "--headless",
            "--artifact", "model_float32.tflite", cwd=tmp_path, env=_env(tmp_path),
        )  # fmt: skip
        assert server.accepted.wait(60), proc.communicate()
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, errs = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        server.close()
    assert proc.returncode == code, errs
    assert "stopped while opening" in errs and "summary:" in errs, errs
    assert "cannot open" not in errs and "error:" not in errs and "Traceback" not in errs
    assert took < 3.0, f"the stop took {took:.1f} s"


def test_a_live_source_whose_open_hangs_returns_on_stop_and_releases_what_opens_later():
    from edgecls.runtime.sources import LiveSource, SourceEnded

    class Capture:
        released = False

        def isOpened(self):
            return True

        def release(self):
            self.released = True

    go, cap = threading.Event(), Capture()

    def opener():
        go.wait(10)
        return cap

    stop, logs = threading.Event(), []
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    source = LiveSource("hanging", opener, stop=stop, log=logs.append)
    assert time.monotonic() - t0 < 1.5
    with pytest.raises(SourceEnded):
        source.read()
    source.close()
    assert logs == ["source hanging: stopped while opening"]
    go.set()  # the open returns after all: its own thread releases what it opened
    _wait_until(lambda: cap.released, timeout=5, what="the late capture's release")


# --- recordings -------------------------------------------------------------------------------


def _timed(n: int, fps: float = 10.0, size=(240, 320), start: int = 0):
    """Records whose images are noise (large, as a real scene) at `fps` of record time."""
    rng = np.random.default_rng(start)
    events = [record(start + i) for i in range(n)]
    for i, r in enumerate(events):
        r.time = 1_700_000_000.0 + (start + i) / fps
        r.image = rng.integers(0, 255, (*size, 3), np.uint8)
    return events


def test_a_recording_never_overwrites_a_file_and_says_its_name(tmp_path):
    video = tmp_path / "line.mp4"
    video.write_bytes(b"someone's video")
    for expected in ("line-2.mp4", "line-3.mp4"):
        logs = []
        run_sinks(config(record=str(video)), _timed(5), context(logs, source_fps=lambda: 10.0))
        started = [m for m in logs if m.startswith("record:")]
        assert len(started) == 1 and f"{expected} (line.mp4 exists)" in started[0], logs
        assert _frames(tmp_path / expected) == 5
    assert video.read_bytes() == b"someone's video"


KILLED_CHILD = """
import sys, time
sys.path[:0] = sys.argv[3:]
from test_line_outputs import config, context
from test_faults_stops import _timed
from edgecls.runtime.sinks import build_sinks, recording
recording.MP4_PART_SECONDS = 1.0
sinks = build_sinks(config(record=sys.argv[1]), context(source_fps=lambda: 10.0)).open()
for i in range(100000):
    for r in _timed(1, start=i):
        sinks.publish(r)
    if i % 5 == 0:
        print(i, flush=True)
    time.sleep(0.01)
"""


@pytest.mark.parametrize("name", ["line.avi", "line.mp4"])
def test_a_recording_killed_mid_write_plays_what_was_written(name, tmp_path):
    """kill -9 (or a power cut) gives a recording no ending: an AVI plays to its last frame,
    an MP4's finished parts play (parts of 1 s here, 60 s by default)."""
    video = tmp_path / name
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(video), "", str(TESTS), str(ROOT)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    while int(proc.stdout.readline() or -1) < 55:
        assert proc.poll() is None
    proc.kill()
    proc.wait()
    if name.endswith(".avi"):
        assert _frames(video) >= 30
        return
    parts = sorted(tmp_path.glob("line*.mp4"), key=lambda p: (len(p.name), p.name))
    assert parts[0] == video and len(parts) >= 4, parts
    played = [_frames(p) for p in parts[:-1]]  # the last was being written
    assert played == [10] * len(played)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB file system: writes fail with ENOSPC once it is full."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({mounted.stderr.decode().strip()})")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("name", ["line.avi", "line.mp4"])
def test_a_disk_that_fills_at_once_leaves_a_recording_that_plays(name, small_disk, monkeypatch):
    """The disk fills between two looks at the room left (another writer took it): OpenCV says
    nothing, the warning says what plays, and it does."""
    from edgecls.runtime.sinks import recording

    monkeypatch.setattr(recording, "DISK_RESERVE_BYTES", 64 << 10)
    monkeypatch.setattr(recording, "MP4_PART_SECONDS", 1.0)
    video, logs = small_disk / name, []
    events = _timed(200, size=(200, 300))
    ctx, _ = run_sinks(config(record=str(video)), events, context(logs))
    warned = [m for m in logs if m.startswith("warning: --record")]
    assert len(warned) == 1 and "the disk has 0 MB left" in warned[0], logs
    assert ctx.summary.output_errors["record"] >= 1
    if name.endswith(".avi"):  # Motion JPEG: every whole frame that reached the disk plays
        assert "finished at" in warned[0] and _frames(video) >= 5
    else:  # the parts before the disk filled play; the one being written then is named
        parts = sorted(small_disk.glob("line*.mp4"), key=lambda p: (len(p.name), p.name))
        if "does not play" in warned[0]:
            assert f"{parts[-1]}:" in warned[0] and _frames(parts.pop()) == 0, warned
            assert f"the {len(parts)} part(s) before it do (line.mp4 to " in warned[0]
        else:  # it filled as a part ended: that part played, no next one could start
            assert "finished at" in warned[0] and f"{parts[-1]}:" in warned[0], warned
        frames = [_frames(p) for p in parts]
        assert frames and all(frames) and frames[:-1] == [10] * (len(frames) - 1), frames


# --- a broken runtime is skipped where another can serve -------------------------------------


def _broken(tmp_path: Path, *modules: str) -> str:
    """A folder whose packages shadow the real ones and fail to import, as a wheel built for
    another numpy or missing its native library does."""
    fake = tmp_path / "broken"
    for module in modules:
        package = fake / module
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"raise ImportError('lib{module}.so: cannot open shared object file')\n"
        )
    return str(fake)


def test_a_broken_onnx_runtime_is_skipped_and_litert_runs(tiny_bundle, insects_data, tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, sorted((insects_data / "test").rglob("*.jpg"))[:4])
    env = _env(tmp_path, PYTHONPATH=os.pathsep.join([_broken(tmp_path, "onnxruntime"), str(ROOT)]))
    env["EDGECLS_CACHE"] = str(tmp_path / "cache")  # measured now, with ONNX Runtime broken
    proc = _edgecls(
        "run", str(tiny_bundle), "--source", str(video), "--headless", "--max-frames", "3",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    _, errs = proc.communicate(timeout=120)
    assert proc.returncode == 0, errs
    warned = [line for line in errs.splitlines() if "ONNX Runtime" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ONNX Runtime is broken here"), errs
    assert "skipping model_float32.onnx" in warned[0] and "--force-reinstall" in warned[0]
    assert "running model_float32.tflite" in errs and "Traceback" not in errs


@pytest.mark.parametrize(
    "broken,backend,message",
    [
        (("onnxruntime",), "onnxruntime", "error: ONNX Runtime is broken here (ImportError"),
        (("onnxruntime", "ai_edge_litert"), "auto", "no runtime here can run its artifacts: "),
    ],
    ids=["asked-for", "auto"],
)
def test_when_no_runtime_can_serve_it_is_one_error_naming_each(
    broken, backend, message, tiny_bundle, insects_data, tmp_path
):
    video = tmp_path / "clip.mp4"
    write_video(video, sorted((insects_data / "test").rglob("*.jpg"))[:2])
    env = _env(tmp_path, PYTHONPATH=os.pathsep.join([_broken(tmp_path, *broken), str(ROOT)]))
    proc = _edgecls(
        "run", str(tiny_bundle), "--source", str(video), "--headless", "--backend", backend,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    _, errs = proc.communicate(timeout=120)
    assert proc.returncode == 2, errs
    lines = _error_lines(errs)
    assert len(lines) == 1 and message in lines[0], errs
    assert "--force-reinstall" in lines[0] and "Traceback" not in errs
    if len(broken) == 2:
        assert "LiteRT (ai-edge-litert) is broken here" in lines[0]
        assert "ONNX Runtime is broken here" in lines[0]
