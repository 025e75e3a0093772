"""No input can exhaust the machine: hostile files, folders, globs, JSON and command output.

Each case builds its fault in a temporary folder (a FIFO or /dev/zero named .jpg, a 2.5 GB sparse
"photo", folders with symlink loops, a 100000-deep manifest, a command that prints without end)
and checks the contract of tests/test_faults.py: the exit code (or the EdgeclsError of the
library call), one line naming the file, what is on disk afterwards, and, where memory or time
was the fault, that it stays bounded: commands that could hang or grow run as real processes
under a timeout, their peak memory (VmHWM) reported by themselves.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from subprocess import PIPE

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.bundle.folder import load_bundle
from edgecls.bundle.manifest import load_manifest
from edgecls.bundle.preprocess import (
    MAX_IMAGE_BYTES,
    Walker,
    image_paths,
    iter_image_paths,
    read_image,
)
from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.folders import load_eval_split, load_folder_dataset
from edgecls.schema import load_json

ROOT = Path(__file__).resolve().parents[1]
SPARSE = 2_500_000_000  # bytes a sparse "photo" claims; none of them is on disk


# -- faults ---------------------------------------------------------------------------------


def _image(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((32, 32, 3), value, np.uint8))
    return path


def _sparse_jpg(path: Path) -> Path:
    """2.5 GB that start like a JPEG: only the size check keeps it out of memory."""
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(SPARSE)
    return path


def _hostile(folder: Path) -> dict[str, str]:
    """The faults a folder can hold, beside its good images; {file name: why it is skipped}."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "fifo.jpg")
    os.symlink("/dev/zero", folder / "zero.jpg")
    _sparse_jpg(folder / "sparse.jpg")
    (folder / "sub" / "deeper").mkdir(parents=True)
    os.symlink("..", folder / "sub" / "loop1")  # two loops: glob.glob grew to 22 GB on these
    os.symlink("../..", folder / "sub" / "deeper" / "loop2")
    return {
        "fifo.jpg": "a FIFO, not a regular file",
        "zero.jpg": "a character device, not a regular file",
        "sparse.jpg": f"above the {MAX_IMAGE_BYTES / 1e6:g} MB limit",
    }


def _within(seconds: float, fn, *args):
    """fn(*args) on a thread, failing the test (not hanging it) past `seconds`."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


# Peak memory is the child's own VmHWM, written as it exits: ru_maxrss of a child counts the
# parent's memory at the fork (kept across exec), and this parent has trained a model.
_PEAK = (
    "import atexit, os\n"
    "def _peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    kb = status.split('VmHWM:')[1].split()[0]\n"
    "    open(os.environ['EDGECLS_TEST_PEAK'], 'w').write(kb)\n"
    "atexit.register(_peak)\n"
)


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", _PEAK + code, *args]


def _edgecls(*args: str) -> list[str]:
    return _python("import runpy; runpy.run_module('edgecls', run_name='__main__')", *args)


def _measured(args: list[str], timeout: float, cwd: Path) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak RSS in MB) of a `_python` process, killed past
    `timeout`."""
    peak = cwd / f"peak-{time.monotonic_ns()}"
    env = {**os.environ, "EDGECLS_CACHE": str(cwd / "cache"), "EDGECLS_TEST_PEAK": str(peak)}
    proc = subprocess.Popen(
        args, stdout=PIPE, stderr=PIPE, text=True, cwd=cwd, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{shlex.join(args[3:])} ran past {timeout} s")
    mb = int(peak.read_text()) / 1024 if peak.exists() else float("nan")
    return proc.returncode, out, err, mb


# -- image files: checked before they are read ------------------------------------------------


def _made(path: Path, make) -> Path:
    make(path)
    return path


IMAGE_FAULTS = {
    "sparse 2.5 GB": (_sparse_jpg, f"above the {MAX_IMAGE_BYTES / 1e6:g} MB limit"),
    "fifo": (os.mkfifo, "a FIFO, not a regular file"),
    "symlink to /dev/zero": (lambda p: os.symlink("/dev/zero", p), "a character device"),
    "folder": (Path.mkdir, "a folder, not a regular file"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "text": (lambda p: p.write_text("x" * 9999), "not a readable image"),
}


@pytest.mark.parametrize("make,words", IMAGE_FAULTS.values(), ids=IMAGE_FAULTS)
def test_an_image_file_is_checked_before_it_is_read(tmp_path, make, words):
    path = _made(tmp_path / "photo.jpg", make)
    with pytest.raises(EdgeclsError) as info:
        _within(10, read_image, path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


def test_a_sparse_jpg_given_to_read_image_costs_no_memory(tmp_path):
    """Read whole, it peaked at 3 GB; refused by its size, a process reading it stays small."""
    big = _sparse_jpg(tmp_path / "big.jpg")
    code = (
        "import sys\n"
        "from edgecls.bundle.preprocess import read_image\n"
        "try:\n    read_image(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
    )
    rc, out, err, peak = _measured(_python(code, str(big)), 60, tmp_path)
    assert rc == 0, err
    assert f"above the {MAX_IMAGE_BYTES / 1e6:g} MB limit" in out
    assert peak < 400, f"peak RSS {peak:.0f} MB reading a {SPARSE / 1e9:g} GB sparse file"
    assert big.stat().st_size == SPARSE  # the user's file is untouched


# -- folders and globs: each real folder once, bounded, stoppable -----------------------------


def _looped(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    for name in ("a.jpg", "sub/b.png", "sub/deeper/c.jpg"):
        _image(folder / name)
    (folder / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    os.symlink("..", folder / "sub" / "loop1")
    os.symlink("../..", folder / "sub" / "deeper" / "loop2")
    os.symlink("a.jpg", folder / "again.jpg")  # the same file by a second name
    return folder


@pytest.mark.parametrize("pattern", ["", "/**/*", "/**/*.jpg", "/*/*/*.jpg", "/**/loop1/*.jpg"])
def test_a_folder_with_two_symlink_loops_is_walked_once_in_bounded_time(tmp_path, pattern):
    folder = _looped(tmp_path)
    found = _within(20, image_paths, f"{folder}{pattern}")
    want = {"": ["a.jpg", "sub/b.png", "sub/deeper/c.jpg"], "/**/*": None}
    want.update({"/**/*.jpg": ["a.jpg", "sub/deeper/c.jpg"], "/*/*/*.jpg": ["sub/deeper/c.jpg"]})
    want["/**/loop1/*.jpg"] = []  # a loop is not entered: its files are reached by their path
    names = [str(p.relative_to(folder)) for p in found]
    assert names == (want[pattern] if want[pattern] is not None else want[""])
    assert len({p.resolve() for p in found}) == len(found)  # each file once


def test_a_walk_past_its_limit_is_one_error_naming_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    for i in range(30):
        (folder / f"d{i:02d}").mkdir(parents=True)
        (folder / f"d{i:02d}" / "x.jpg").write_bytes(b"")
    with pytest.raises(EdgeclsError) as info:
        list(iter_image_paths(folder, Walker(limit=40)))
    assert str(info.value).startswith(f"{folder}: more than 40 files and folders")
    assert "\n" not in str(info.value)
    small = Walker(limit=40)
    monkeypatch.setattr("edgecls.folders.Walker", lambda: small)
    with pytest.raises(EdgeclsError, match=r"more than 40 files and folders"):
        load_folder_dataset(folder)
    assert len(list(folder.rglob("*"))) == 60  # nothing moved or deleted


def test_a_walk_ends_when_its_stop_event_is_set(tmp_path):
    folder = tmp_path / "tree"
    for i in range(50):
        _image(folder / f"d{i:02d}" / "x.jpg")
    stop = threading.Event()
    seen = []
    for path in iter_image_paths(folder, Walker(stop=stop)):
        seen.append(path)
        if len(seen) == 3:
            stop.set()
    assert len(seen) == 3


def test_a_training_folder_of_hostile_files_is_scanned_and_each_is_named(tmp_path):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(4):
            _image(data / cls / f"{i}.png", 40 + 100 * (cls == "b"))
    why = _hostile(data / "a")
    before = sorted(str(p) for p in data.rglob("*") if "loop" not in str(p))
    ds = _within(30, load_folder_dataset, data)
    skipped = {p.name: reason for p, reason in ds.skipped}
    for name, words in why.items():
        assert words in skipped[name], skipped
    assert sum(len(s) for s in ds.splits.values()) == 8
    split, skipped = _within(30, load_eval_split, data, ["a", "b"])
    assert len(split) == 8 and {p.name for p, _ in skipped} == set(why)
    assert sorted(str(p) for p in data.rglob("*") if "loop" not in str(p)) == before


def _slow_walk(monkeypatch, walking: threading.Event, seconds: float = 0.1):
    """Every folder listing takes `seconds`: a walk of a slow disk or a huge tree."""
    real = os.scandir

    def scandir(path="."):
        walking.set()
        time.sleep(seconds)
        return real(path)

    monkeypatch.setattr("edgecls.bundle.preprocess.os.scandir", scandir)


def test_sigterm_while_a_glob_is_walked_ends_the_run_within_seconds(
    int8_bundle, tmp_path, monkeypatch
):
    """The walk is the source's, on its reading thread: the loop's stop signal reaches it."""
    from edgecls.runtime.loop import LoopConfig, run

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    for i in range(300):
        (tmp_path / "tree" / f"d{i:03d}").mkdir(parents=True)
    walking = threading.Event()
    _slow_walk(monkeypatch, walking)  # 30 s to walk it all

    def signal_once_walking():
        walking.wait(60)
        time.sleep(0.5)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    sent: list[float] = []
    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # never pytest's death
    try:
        threading.Thread(target=signal_once_walking, daemon=True).start()
        summary = run(LoopConfig(int8_bundle, f"{tmp_path}/tree/**/*.jpg", headless=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    took = time.monotonic() - sent[0]
    assert took < 3.0, f"SIGTERM took {took:.1f} s"
    assert summary.frames == 0 and summary.interrupted_by is None  # SIGTERM: a clean stop


def test_run_over_a_hostile_folder_and_glob_names_each_fault_in_bounded_memory(
    int8_bundle, insects_data, tmp_path
):
    folder = tmp_path / "frames"
    why = _hostile(folder)
    good = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:2]
    for p in good:
        shutil.copy(p, folder / p.name)
    for source in (str(folder), f"{folder}/**/*.jpg"):
        args = _edgecls("run", str(int8_bundle), "--source", source, "--headless", "--json")
        rc, out, err, peak = _measured(args, 120, tmp_path)
        assert rc == 1, err  # not every image was classified, and the exit code says so
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert sorted(Path(r["name"]).name for r in records) == sorted(p.name for p in good)
        for name, words in why.items():
            assert re.search(rf"warning: skipped \S*{name}: .*{words}", err), err
        assert "Traceback" not in err
        assert peak < 500, f"peak RSS {peak:.0f} MB"
    assert (folder / "sparse.jpg").stat().st_size == SPARSE and (folder / "fifo.jpg").exists()


def test_a_glob_that_matches_nothing_is_one_error_after_the_walk(int8_bundle, tmp_path):
    """The walk runs as frames are read: finding nothing is still one line, exit 2."""
    _looped(tmp_path)
    spec = f"{tmp_path}/frames/**/*.webp"
    result = CliRunner().invoke(app, ["run", str(int8_bundle), "--source", spec, "--headless"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--source {spec}: no images found" in errors[0], result.output
    assert "Traceback" not in result.output


# -- predict and evaluate -----------------------------------------------------------------------


def test_predict_refuses_hostile_files_by_name_without_hanging_or_growing(int8_bundle, tmp_path):
    why = _hostile(tmp_path / "in")
    good = _image(tmp_path / "in" / "ok.png")
    files = [str(tmp_path / "in" / name) for name in why]
    model = str(int8_bundle / "model_int8.tflite")
    rc, out, err, peak = _measured(_edgecls("predict", model, *files, str(good)), 120, tmp_path)
    assert rc == 1, err
    assert out.count(": ") == 1 and str(good) in out  # the good image is still labelled
    lines = err.strip().splitlines()
    assert len(lines) == len(why), err  # one line each
    for line, (name, words) in zip(lines, why.items(), strict=True):
        assert name in line and words in line, line
    assert peak < 500, f"peak RSS {peak:.0f} MB"


def test_predict_with_a_model_or_labels_that_is_not_a_file_is_one_error(tmp_path):
    zero = tmp_path / "model.tflite"
    os.symlink("/dev/zero", zero)
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    model = _made(tmp_path / "fake.onnx", lambda p: p.write_bytes(b"onnx"))  # labels come first
    for args, words in (
        ([str(zero), "x.jpg"], f"{zero}: a character device, not a regular file"),
        ([str(model), "x.jpg", "--labels", str(fifo)], f"{fifo}: a FIFO, not a regular file"),
    ):
        rc, _, err, _ = _measured(_edgecls("predict", *args), 60, tmp_path)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and words in errors[0], err


def test_evaluate_names_hostile_files_in_its_data_and_reports_the_rest(
    int8_bundle, insects_data, tmp_path
):
    data = tmp_path / "eval"
    shutil.copytree(insects_data / "test", data)
    why = _hostile(data / "beetles")
    args = ["evaluate", str(int8_bundle / "model_int8.tflite"), "--data", str(data)]
    result = _within(120, CliRunner().invoke, app, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    for name, words in why.items():
        assert re.search(rf"skipped \S*{name}: .*{words}", result.output), result.output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 300


# -- JSON: too deep or too big is one line ------------------------------------------------------


def _bundle_with_manifest(tmp_path: Path, write) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write(bundle / "manifest.json")
    return bundle


@pytest.mark.parametrize(
    "write,words",
    [
        (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "nested more than 64 levels"),
        (lambda p: p.write_text('{"a":' * 500 + "1" + "}" * 500), "nested more than 64 levels"),
        (lambda p: os.truncate(_made(p, Path.touch), SPARSE), "above the 8 MB limit"),
        (lambda p: os.mkfifo(p), "a FIFO, not a regular file"),
        (lambda p: os.symlink("/dev/zero", p), "a character device, not a regular file"),
    ],
    ids=["100000 deep", "500 deep", "sparse 2.5 GB", "fifo", "/dev/zero"],
)
def test_a_hostile_manifest_is_one_line_naming_it(tmp_path, write, words):
    bundle = _bundle_with_manifest(tmp_path, write)
    with pytest.raises(EdgeclsError) as info:
        _within(20, load_manifest, bundle)
    message = str(info.value)
    assert message.startswith(f"{bundle / 'manifest.json'}: ") and words in message
    assert "\n" not in message


def test_run_on_a_100000_deep_manifest_exits_2_with_one_line(tmp_path):
    deep = lambda p: p.write_text("[" * 100_000 + "]" * 100_000)  # noqa: E731
    bundle = _bundle_with_manifest(tmp_path, deep)
    before = (bundle / "manifest.json").read_bytes()
    args = _edgecls("run", str(bundle), "--source", str(tmp_path), "--headless")
    rc, _, err, _ = _measured(args, 60, tmp_path)
    assert rc == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "manifest.json" in errors[0] and "nested" in errors[0], err
    assert (bundle / "manifest.json").read_bytes() == before
    with pytest.raises(EdgeclsError, match="nested more than"):
        load_bundle(bundle)


def test_a_hostile_json_file_is_one_line_naming_it(tmp_path):
    config = tmp_path / "config.json"
    for content, words in ((b"[" * 5000, "nested more than"), (b"\xff\xfe", "not UTF-8")):
        config.write_bytes(content)
        with pytest.raises(EdgeclsError) as info:
            load_json(config)
        assert str(info.value).startswith(f"{config}: ") and words in str(info.value)
    config.write_text('{"ok": [1, {"two": 2}]}')
    assert load_json(config) == {"ok": [1, {"two": 2}]}


# -- a command's output: bounded whatever it prints ---------------------------------------------

_SINK = """
import sys, time
from pathlib import Path
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.records import Decision, Identity
from edgecls.runtime.sinks.command import CommandSink

options = LoopOptions(bundle=Path("b"), headless=True, trigger="def", on_trigger=sys.argv[1],
                      on_trigger_timeout=float(sys.argv[2]))
sink = CommandSink(options.to_config())
identity = Identity("casting", "model_int8.tflite", "ab" * 32, ("ok", "def"))
t0 = time.monotonic()
try:
    sink.handle(Decision(0, time.time(), "def", 3, 3, "consecutive", "cam", identity))
    print("ok")
except RuntimeError as exc:
    print("failed:", exc)
print(f"took {time.monotonic() - t0:.1f}")
"""


def _sink_run(tmp_path: Path, command: str, timeout: float) -> tuple[str, float]:
    rc, out, err, peak = _measured(_python(_SINK, command, str(timeout)), timeout + 60, tmp_path)
    assert rc == 0, err
    return out, peak


@pytest.mark.parametrize(
    "script,words",
    [
        ("yes", "ran past 2 s and was killed"),
        ("yes >&2", "ran past 2 s and was killed"),
        ("head -c 300000000 /dev/zero; echo the end >&2; exit 3", "exited 3: the end"),
        ("yes noise | head -c 300000000 >&2; echo the end >&2; exit 3", "exited 3: the end"),
    ],
    ids=["yes", "yes to stderr", "300 MB then fail", "300 MB of stderr then fail"],
)
def test_an_on_trigger_command_that_prints_without_end_costs_no_memory(tmp_path, script, words):
    baseline, base_peak = _sink_run(tmp_path, "true", 2.0)
    assert "ok" in baseline
    out, peak = _sink_run(tmp_path, shlex.join(["sh", "-c", script]), 2.0)
    assert f"failed: sh {words}" in out, out
    assert float(out.split("took ")[1]) < 10  # the timeout still holds
    assert peak < base_peak + 50, f"peak RSS {peak:.0f} MB (with `true`: {base_peak:.0f} MB)"


def test_an_on_trigger_command_that_reads_no_stdin_and_exits_is_fine(tmp_path):
    out, _ = _sink_run(tmp_path, "true", 2.0)
    assert out.startswith("ok"), out
    out, _ = _sink_run(tmp_path, shlex.join(["sh", "-c", "exec 0<&-; sleep 0.2"]), 2.0)
    assert out.startswith("ok"), out


def test_a_tiny_progressive_jpeg_announcing_a_huge_image_is_refused_before_decoding(tmp_path):
    """A baseline JPEG decodes at 1/8 scale in little memory; a progressive one keeps every
    coefficient of the full size even then: 4 KB announcing 60000x60000 was 10 GB."""
    from edgecls.bundle.preprocess import ImageTooLarge, decode_image

    _, buf = cv2.imencode(
        ".jpg", np.zeros((16, 16, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2  # height, width
    with pytest.raises(ImageTooLarge, match="60000x60000 pixels"):
        decode_image(bytes(data))
