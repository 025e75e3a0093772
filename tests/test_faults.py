"""The fault matrix: what a user or a line throws at every command, and the contract it meets.

Each case builds its fault in a temporary folder (a wrong path, a full or read-only disk, a
corrupt file, a bad option), runs the command as a user would (CliRunner, or a real process
where signals and timing matter) and checks three things: the exit code, one `error:` line (or
one warning) with no traceback, and what is on disk afterwards. Full and read-only disks are
simulated with OSError(ENOSPC / EROFS) at the write, since tests cannot mount filesystems here
(and run as root, for whom chmod does not make a folder read-only).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_line_outputs import config, context, record, run_sinks
from typer.testing import CliRunner
from videos import write_video

from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.runtime.sinks import build_sinks

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class World:
    """What a case may break: copies of a run and a bundle, data, a video; all its own."""

    tmp: Path
    run: Path
    bundle: Path
    data: Path
    video: Path

    def snapshot(self, folder: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }


@dataclass
class Case:
    name: str
    args: Callable[[World], list[str]]  # builds the fault, returns the command line
    code: int
    message: str  # must appear in the one error line (or, for code 0, in the output)
    after: Callable[[World], None] | None = None  # what must be on disk afterwards
    fault: Callable[[World, pytest.MonkeyPatch], None] | None = None  # patched in the process


def _oserror(code: int):
    def raise_(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return raise_


def _unchanged(path_of: Callable[[World], Path]):
    """An after-check: the folder is byte for byte what it was when the case began."""

    def setup_and_check(w: World):
        folder = path_of(w)
        return w.snapshot(folder) if folder.exists() else None

    return setup_and_check


# -- helpers that build faults ---------------------------------------------------------------


def _spoil(path: Path, content: bytes) -> list[str]:
    path.write_bytes(content)
    return []


def _user_folder(w: World) -> Path:
    folder = w.tmp / "my-photos"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("mine, do not delete")
    return folder


def _bad_labels(w: World) -> Path:
    (w.run / "labels.txt").write_bytes("b\xe4tles\ncockroach\n".encode("latin-1"))
    return w.run


def _huge_png(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    big = np.zeros((9000, 9000), np.uint8)
    path = folder / "huge.png"
    cv2.imwrite(str(path), big)  # 9000x9000: 81 MP, over the 64 MP limit; ~80 kB on disk
    return path


def _eval_folder_with_huge(w: World) -> Path:
    folder = w.tmp / "eval"
    shutil.copytree(w.data / "test", folder)
    _huge_png(folder / "beetles")
    return folder


def _corrupt_cache(content: bytes):
    def make(w: World) -> list[str]:
        cache = w.tmp / "default-cache"  # where the world points EDGECLS_CACHE
        cache.mkdir(exist_ok=True)
        (cache / "auto-backend.json").write_bytes(content)
        return ["run", str(w.bundle), "--source", str(w.video), "--headless", "--max-frames", "2"]

    return make


def _cache_rebuilt(w: World) -> None:
    cache = json.loads((w.tmp / "default-cache" / "auto-backend.json").read_text())
    assert isinstance(cache, dict) and cache, "the cache is measured again and written whole"


def _calibration_collision(w: World) -> list[str]:
    out = w.tmp / "calib"
    (out / "beetles").mkdir(parents=True)
    first = sorted((w.data / "train" / "beetles").glob("*.jpg"))[0]
    (out / "beetles" / first.name).write_bytes(b"the user's own file")
    return ["data", "calibration", "--from", str(w.data), "--out", str(out), "--size", "5000"]


def _nested_source(w: World) -> Path:
    src = w.tmp / "nested"
    for sub in ("day", "night"):
        d = src / "ok" / sub
        d.mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(d / f"img_{i}.jpg"), np.full((32, 32, 3), 40 * i, np.uint8))
    (src / "def").mkdir()
    cv2.imwrite(str(src / "def" / "img_0.jpg"), np.zeros((32, 32, 3), np.uint8))
    return src


def _check_nested(w: World) -> None:
    out = w.tmp / "calib-nested"
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert names == [
        "def/img_0.jpg",
        *(f"ok/{sub}/img_{i}.jpg" for sub in ("day", "night") for i in range(3)),
    ]


def _run_args(w: World, *extra: str) -> list[str]:
    return ["run", str(w.bundle), "--source", str(w.video), "--headless", *extra]


def _assert_no_partial(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers


# -- the table ---------------------------------------------------------------------------------

CASES: list[Case] = [
    # export: never deletes or mixes what edgecls did not write, never leaves half a bundle
    Case(
        "export --out is the run folder",
        lambda w: ["export", str(w.run), "--out", str(w.run)],
        2,
        "holds the model being exported",
        after=lambda w: (w.run / "model.keras").is_file(),
    ),
    Case(
        "export --out is a folder of the user's own files",
        lambda w: ["export", str(w.run), "--out", str(_user_folder(w))],
        2,
        "is not an edgecls bundle (notes.txt); edgecls replaces only its own",
        after=lambda w: (w.tmp / "my-photos" / "notes.txt").read_text() == "mine, do not delete",
    ),
    Case(
        "export --out is a file",
        lambda w: ["export", str(w.run), "--out", str(w.run / "labels.txt")],
        2,
        "is a file",
    ),
    Case(
        "export onto a full disk",
        lambda w: ["export", str(w.run), "--out", str(w.tmp / "b")],
        2,
        "No space left on device",
        after=lambda w: not (w.tmp / "b").exists() and _assert_no_partial(w.tmp) is None,
        fault=lambda w, mp: mp.setattr("edgecls.durable.fsync_tree", _oserror(errno.ENOSPC)),
    ),
    Case(
        "export over an older bundle onto a read-only disk",
        lambda w: ["export", str(w.run), "--out", str(w.bundle)],
        2,
        "Read-only file system",
        after=lambda w: json.loads((w.bundle / "manifest.json").read_text())["artifacts"],
        fault=lambda w, mp: mp.setattr("edgecls.durable.replace_folder", _oserror(errno.EROFS)),
    ),
    Case(
        "export --max-drop negative",
        lambda w: ["export", str(w.run), "--max-drop", "-1"],
        2,
        "--max-drop",
    ),
    Case(
        "export --min-agreement 2",
        lambda w: ["export", str(w.run), "--min-agreement", "2"],
        2,
        "--min-agreement",
    ),
    Case(
        "export --calibration-size 0",
        lambda w: ["export", str(w.run), "--int8", "--calibration-size", "0"],
        2,
        "--calibration-size",
    ),
    Case(
        "export a run whose labels.txt is not UTF-8",
        lambda w: ["export", str(_bad_labels(w))],
        2,
        "not UTF-8",
    ),
    Case(
        "export --format nonsense",
        lambda w: ["export", str(w.run), "--format", "coreml"],
        2,
        "--format coreml",
    ),
    Case(
        "export a run folder without a model",
        lambda w: ["export", str(w.tmp)],
        2,
        "no model.keras",
    ),
    # parity
    Case(
        "parity --record on a read-only bundle",
        lambda w: ["parity", str(w.bundle), "--data", str(w.data / "test"), "--record"],
        2,
        "cannot record the check",
        after=lambda w: (
            not json.loads((w.bundle / "manifest.json").read_text())["parity"].get("device_checks")
        ),
        fault=lambda w, mp: mp.setattr(os, "replace", _oserror(errno.EROFS)),
    ),
    Case(
        "parity --data missing",
        lambda w: ["parity", str(w.bundle), "--data", str(w.tmp / "nope")],
        2,
        "not a folder",
    ),
    Case(
        "parity on a bundle whose manifest is not UTF-8",
        lambda w: (
            _spoil(w.bundle / "manifest.json", b"\xff\xfe{}")
            or ["parity", str(w.bundle), "--data", str(w.data / "test")]
        ),
        2,
        "not UTF-8",
    ),
    Case(
        "parity --min-agreement 1.5",
        lambda w: ["parity", str(w.bundle), "--data", str(w.data), "--min-agreement", "1.5"],
        2,
        "--min-agreement",
    ),
    # benchmark
    Case("benchmark --runs 0", lambda w: ["benchmark", str(w.bundle), "--runs", "0"], 2, "--runs"),
    Case(
        "benchmark a bundle with an altered artifact",
        lambda w: (
            _spoil(w.bundle / "model_int8.onnx", b"garbage")
            or ["benchmark", str(w.bundle), "--runs", "1"]
        ),
        2,
        "sha256 differs",
    ),
    # data calibration
    Case(
        "data calibration --out is a file",
        lambda w: [
            "data",
            "calibration",
            "--from",
            str(w.data),
            "--out",
            str(w.run / "labels.txt"),
        ],
        2,
        "is a file",
    ),
    Case(
        "data calibration --size 0",
        lambda w: ["data", "calibration", "--from", str(w.data), "--size", "0"],
        2,
        "--size",
    ),
    Case(
        "data calibration never overwrites a file already there",
        _calibration_collision,
        2,
        "already holds",
        after=lambda w: (
            next((w.tmp / "calib" / "beetles").iterdir()).read_bytes() == b"the user's own file"
        ),
    ),
    Case(
        "data calibration keeps nested class folders",
        lambda w: [
            "data",
            "calibration",
            "--from",
            str(_nested_source(w)),
            "--out",
            str(w.tmp / "calib-nested"),
        ],
        0,
        "copied 7 images from 2 classes",
        after=_check_nested,
    ),
    Case(
        "data calibration from a missing folder",
        lambda w: ["data", "calibration", "--from", str(w.tmp / "nope"), "--out", str(w.tmp / "c")],
        2,
        "not a folder",
    ),
    # evaluate / predict
    Case(
        "evaluate with labels.txt not UTF-8",
        lambda w: ["evaluate", str(_bad_labels(w) / "model.keras"), "--data", str(w.data)],
        2,
        "not UTF-8",
    ),
    Case(
        "evaluate skips an image too large to decode safely",
        lambda w: [
            "evaluate",
            str(w.bundle / "model_int8.tflite"),
            "--data",
            str(_eval_folder_with_huge(w)),
            "--out",
            str(w.tmp / "report"),
        ],
        1,  # the reports cover the images read, and the exit code says some were not
        "above the 64 MP limit",
        after=lambda w: json.loads((w.tmp / "report" / "metrics.json").read_text())["n"] == 300,
    ),
    Case(
        "predict an image too large to decode safely",
        lambda w: ["predict", str(w.bundle / "model_int8.tflite"), str(_huge_png(w.tmp))],
        1,
        "above the 64 MP limit",
    ),
    Case(
        "predict a missing image",
        lambda w: ["predict", str(w.bundle / "model_int8.tflite"), str(w.tmp / "nope.jpg")],
        1,
        "cannot read file",
    ),
    Case(
        "evaluate --out on a full disk",
        lambda w: [
            "evaluate",
            str(w.bundle / "model_int8.tflite"),
            "--data",
            str(w.data),
            "--out",
            str(w.tmp / "r"),
        ],
        2,
        "cannot write the reports",
        fault=lambda w, mp: mp.setattr(
            "edgecls.evaluate.write_text_atomic", _oserror(errno.ENOSPC)
        ),
    ),
    # run
    Case("run --max-frames 0", lambda w: _run_args(w, "--max-frames", "0"), 2, "--max-frames"),
    Case(
        "run --min-confidence 2", lambda w: _run_args(w, "--min-confidence", "2"), 2, "confidence"
    ),
    Case("run --every 0", lambda w: _run_args(w, "--every", "0"), 2, "--every"),
    Case(
        "run with a 0-byte backend cache",
        _corrupt_cache(b""),
        0,
        "ignoring the backend cache",
        after=_cache_rebuilt,
    ),
    Case(
        "run with a corrupt backend cache",
        _corrupt_cache(b'{"abc": [1, 2'),
        0,
        "ignoring the backend cache",
        after=_cache_rebuilt,
    ),
    Case(
        "run with an unwritable cache folder",
        lambda w: _run_args(w, "--max-frames", "2"),
        0,
        "cannot write the backend cache",
        fault=lambda w, mp: mp.setenv("EDGECLS_CACHE", str(w.run / "labels.txt")),
    ),
    Case(
        "run --source that does not exist",
        lambda w: ["run", str(w.bundle), "--source", str(w.tmp / "missing.mp4"), "--headless"],
        2,
        "--source",
    ),
    Case(
        "run --source a camera that is not there (may come: exit 1)",
        lambda w: ["run", str(w.bundle), "--source", "7", "--headless"],
        1,
        "cannot open",
    ),
    Case(
        "run --source a GStreamer pipeline on an OpenCV without GStreamer",
        lambda w: ["run", str(w.bundle), "--source", "videotestsrc ! appsink", "--headless"],
        2,
        "without GStreamer",
    ),
    Case(
        "run --save-labels a label the bundle does not have",
        lambda w: _run_args(w, "--save-dir", str(w.tmp / "s"), "--save-labels", "wasp"),
        2,
        "wasp",
    ),
    Case(
        "run --record into a folder that cannot be made",
        lambda w: _run_args(w, "--record", str(w.run / "labels.txt" / "out.mp4")),
        2,
        "--record",
        after=lambda w: (w.run / "labels.txt").is_file(),
    ),
    Case(
        "run --save-dir that is a file",
        lambda w: _run_args(w, "--save-dir", str(w.run / "labels.txt")),
        2,
        "--save-dir",
    ),
    Case(
        "run --save-dir on a disk that fills up",
        lambda w: _run_args(w, "--save-dir", str(w.tmp / "saved"), "--max-frames", "4"),
        0,
        "output errors: frames 4",  # reported and counted; the loop classified every frame
        after=lambda w: not [p for p in (w.tmp / "saved").iterdir()],  # no half-written frame
        fault=lambda w, mp: mp.setattr(
            "edgecls.runtime.sinks.frames.os.fdopen", _oserror(errno.ENOSPC)
        ),
    ),
    Case(
        "benchmark with a delegate that cannot load says it fell back",
        lambda w: ["benchmark", str(w.bundle), "--runs", "2", "--delegate", "gpu"],
        0,
        "warning: model_int8.tflite",
    ),
    Case(
        "run a bundle folder that is not a bundle",
        lambda w: ["run", str(w.tmp), "--source", str(w.video), "--headless"],
        2,
        "not a bundle",
    ),
    # explain / train
    Case(
        "explain --method unknown",
        lambda w: ["explain", str(w.run), "--images", str(w.video), "--method", "lime"],
        2,
        "choose one of gradient, partition",
    ),
    Case(
        "explain images none of which is readable",
        lambda w: ["explain", str(w.run), "--images", str(w.tmp / "nothing-*.jpg")],
        2,
        "no readable image",
    ),
    Case(
        "train --data that is not a folder",
        lambda w: ["train", "--data", str(w.tmp / "nope"), "--out", str(w.tmp / "r")],
        2,
        "not a folder",
        after=lambda w: not (w.tmp / "r").exists(),
    ),
    Case(
        "train an unknown --model into an existing run folder",
        lambda w: ["train", "--data", str(w.data), "--model", "resnet-9000", "--out", str(w.run)],
        2,
        "resnet-9000",
    ),
]

# Cases whose folder must be byte for byte unchanged afterwards, by what they touch.
UNCHANGED = {
    "export --out is the run folder": lambda w: w.run,
    "train an unknown --model into an existing run folder": lambda w: w.run,
    "parity --record on a read-only bundle": lambda w: w.bundle,
    "export over an older bundle onto a read-only disk": lambda w: w.bundle,
    "benchmark --runs 0": lambda w: w.bundle,
}


@pytest.fixture
def world(insects_run, int8_bundle, insects_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLS_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.chdir(tmp_path)  # anything written by default lands here, not in the repo
    run = shutil.copytree(insects_run, tmp_path / "run")
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    video = tmp_path / "v.mp4"
    write_video(video, sorted((insects_data / "test").rglob("*.jpg"))[:4], size=(64, 64))
    return World(tmp_path, run, bundle, insects_data, video)


def test_the_matrix_is_wide():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    commands = {c.name.split()[0] for c in CASES}
    assert {"export", "parity", "benchmark", "data", "evaluate", "predict", "run"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, world: World, monkeypatch):
    keep = UNCHANGED.get(case.name)
    before = world.snapshot(keep(world)) if keep else None
    with monkeypatch.context() as mp:
        args = case.args(world)
        if case.fault:
            case.fault(world, mp)
        result = CliRunner().invoke(app, args)
    output = result.output
    assert result.exit_code == case.code, (args, output)
    assert "Traceback" not in output, output
    if case.code == 2 or (case.code == 1 and "error:" in output):
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        assert case.message in errors[0], output
    else:
        assert case.message in output, output
    if keep:
        assert world.snapshot(keep(world)) == before, "the folder was changed"
    if case.after:
        assert case.after(world) is not False


# -- faults that need a real process, a clock or a live stream ------------------------------


def _edgecls(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "EDGECLS_CACHE": str(cwd / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "edgecls", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


def _frames(insects_data, n=6):
    return [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:n]]


def test_sigterm_while_the_stream_is_down_ends_the_run_within_seconds(
    int8_bundle, insects_data, tmp_path
):
    from mjpeg_server import MjpegServer

    record = tmp_path / "out.mp4"
    with MjpegServer(_frames(insects_data), fps=20) as cam:
        proc = _edgecls(
            "run", str(int8_bundle), "--source", cam.url, "--headless", "--json",
            "--record", str(record), cwd=tmp_path,
        )  # fmt: skip
        assert proc.stdout.readline().startswith("{")  # frames flow
        cam.refuse()  # the camera goes away: every reconnect is refused
        time.sleep(3.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, errs = proc.communicate(timeout=20)
        took = time.monotonic() - t0
    assert took < 3.0, f"SIGTERM took {took:.1f} s"
    assert proc.returncode == 0, errs
    assert "reopening" in errs and "summary:" in errs and "Traceback" not in errs
    cap = cv2.VideoCapture(str(record))  # finalised: playable
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 1


def test_a_stream_that_stalls_and_drops_is_recovered_without_a_crash(
    int8_bundle, insects_data, tmp_path
):
    from mjpeg_server import MjpegServer

    with MjpegServer(_frames(insects_data), fps=20) as cam:
        proc = _edgecls(
            "run", str(int8_bundle), "--source", cam.url, "--headless", "--json",
            "--max-frames", "120", cwd=tmp_path,
        )  # fmt: skip
        assert proc.stdout.readline().startswith("{")
        cam.stall()  # the socket stays open and silent: a naive reader hangs here
        time.sleep(7.0)
        cam.resume()
        time.sleep(1.0)
        cam.drop()
        out, errs = proc.communicate(timeout=90)
    assert proc.returncode == 0, errs  # no segfault (139), no abort (134)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 119  # the first was read above
    reconnects = int(re.findall(r"(\d+) reconnects", errs)[-1])
    assert reconnects >= 2, errs  # the stall and the drop were both recovered


def _corrupt_middle(src: Path, dest: Path) -> None:
    data = bytearray(src.read_bytes())
    start = len(data) // 2
    data[start : start + 2000] = os.urandom(2000)
    dest.write_bytes(bytes(data))


def test_a_video_damaged_in_the_middle_is_read_to_its_end(int8_bundle, insects_data, tmp_path):
    from edgecls.runtime.loop import LoopConfig, run

    images = sorted((insects_data / "test").rglob("*.jpg"))[:30]
    clean = tmp_path / "clean.mp4"
    total = write_video(clean, images, repeat=4, size=(64, 64))
    damaged = tmp_path / "damaged.mp4"
    _corrupt_middle(clean, damaged)
    logs: list[str] = []
    summary = run(LoopConfig(int8_bundle, str(damaged), headless=True), log=logs.append)
    assert summary.frames == total, logs  # every frame position reached: read to the real end
    assert 0 < summary.corrupt < total // 4 and summary.classified == total - summary.corrupt
    assert not any("ended after" in line for line in logs)


def test_a_video_that_ends_early_says_so(int8_bundle, insects_data, tmp_path):
    from edgecls.runtime.loop import LoopConfig, run

    images = sorted((insects_data / "test").rglob("*.jpg"))[:30]
    clean = tmp_path / "clean.avi"
    writer = cv2.VideoWriter(str(clean), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for p in images * 4:
        writer.write(cv2.resize(cv2.imread(str(p)), (64, 64)))
    writer.release()
    cut = tmp_path / "cut.avi"
    data = clean.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header still says 120 frames
    logs: list[str] = []
    summary = run(LoopConfig(int8_bundle, str(cut), headless=True), log=logs.append)
    assert 0 < summary.classified < 120
    assert any(f"ended after {summary.frames} of 120 frames" in line for line in logs), logs


def test_an_image_folder_with_a_symlink_loop_is_classified_once_per_file(
    int8_bundle, insects_data, tmp_path
):
    from edgecls.runtime.loop import LoopConfig, run

    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    for p in sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:3]:
        shutil.copy(p, folder / "sub" / p.name)
    os.symlink(folder, folder / "sub" / "loop")
    summary = run(LoopConfig(int8_bundle, str(folder), headless=True), log=lambda m: None)
    assert summary.classified == 3
    summary = run(LoopConfig(int8_bundle, f"{folder}/**/*.jpg", headless=True), log=lambda m: None)
    assert summary.classified == 3


def test_a_folders_unreadable_images_are_named_and_the_run_exits_1(
    int8_bundle, insects_data, tmp_path
):
    """A corrupt file, and an image smaller than --roi, are one image each: named and skipped;
    the rest of the folder is classified, and the exit code says not all were."""
    folder = tmp_path / "frames"
    beetles = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:2]
    for sub in ("a", "b"):  # the same file names in two sub-folders
        (folder / sub).mkdir(parents=True)
        for p in beetles:
            shutil.copy(p, folder / sub / p.name)
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    cv2.imwrite(str(folder / "b" / "small.png"), np.zeros((20, 20, 3), np.uint8))
    args = ["run", str(int8_bundle), "--source", str(folder), "--headless", "--json"]
    result = CliRunner().invoke(app, [*args, "--roi", "0,0,48,48"])
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    names = sorted(r["name"] for r in records)
    assert names == sorted(f"{sub}/{p.name}" for sub in ("a", "b") for p in beetles)
    assert re.search(r"warning: skipped .*broken\.jpg.*not a readable image", result.stderr)
    assert re.search(
        r"warning: skipped b/small\.png: --roi 0,0,48,48: outside the 20x20", result.stderr
    )
    assert "2 images not classified" in result.stderr and "Traceback" not in result.output


def test_every_skips_a_folders_broken_images_it_would_not_classify(
    int8_bundle, insects_data, tmp_path
):
    """--every 2 classifies images 0, 2, 4 of the sorted folder: a broken image at 1 or 3 is
    counted as corrupt but is not one the run failed to classify (exit 0); one at 2 is (exit 1)."""
    good = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:3]
    args = ["--headless", "--json", "--every", "2"]
    for broken_at, code in ((1, 0), (2, 1)):
        folder = tmp_path / f"broken_at_{broken_at}"
        folder.mkdir()
        names = [f"{i}.jpg" for i in range(5)]
        for i, name in enumerate(names):
            if i == broken_at:
                (folder / name).write_bytes(b"\xff\xd8 broken")
            else:
                shutil.copy(good[i % len(good)], folder / name)
        result = CliRunner().invoke(app, ["run", str(int8_bundle), "--source", str(folder), *args])
        assert result.exit_code == code, result.output
        lines = result.stdout.splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert [r["name"] for r in records if r.get("type") == "frame"] == [
            n for i, n in enumerate(names) if i % 2 == 0 and i != broken_at
        ]
        named = re.search(rf"warning: skipped \S*/{broken_at}\.jpg: not a readable", result.stderr)
        assert bool(named) == bool(code), result.stderr
        assert sorted(p.name for p in folder.iterdir()) == names  # nothing moved or deleted


class _BrokenOnnxRuntime:
    """A meta-path finder that makes `import onnxruntime` fail as a wheel for the wrong CUDA
    does."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError("libonnxruntime.so: cannot open shared object file")
        return None


def test_doctor_reports_a_runtime_that_fails_to_import(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "onnxruntime"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenOnnxRuntime(), *sys.meta_path])
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "broken" in result.output and "libonnxruntime" in result.output


# -- outputs that fail: saved frames and recordings, on the sinks themselves ----------------


def test_saved_frames_have_unique_safe_names_across_restarts(tmp_path):
    save = tmp_path / "saved"
    cfg = config(save_dir=str(save))
    events = [record(0, "ok"), record(1, "def")]
    slash = record(2, "ok")
    slash.label = "def/../crack"
    run_sinks(cfg, [*events, slash])
    run_sinks(cfg, [record(0, "ok")])  # a restart: frame numbers start at 0 again
    names = sorted(p.name for p in save.iterdir())
    assert len(names) == 4 and len(set(names)) == 4
    assert all(n.startswith("edgecls-") and n.endswith(".jpg") for n in names)
    assert any("-def_.._crack-" in n for n in names) and not (tmp_path / "crack").exists()
    assert sum("-f00000000-ok-" in n for n in names) == 2


def test_save_quota_deletes_oldest_of_ours_only(tmp_path):
    save = tmp_path / "saved"
    save.mkdir()
    (save / "mine.jpg").write_bytes(b"user file" * 1000)
    (save / "edgecls-notes.txt").write_text("also the user's")
    cfg = config(save_dir=str(save), save_max_mb=0.02)  # ~20 KB: a few frames
    noisy = [record(i) for i in range(30)]
    rng = np.random.default_rng(0)
    for r in noisy:
        r.image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # ~4-5 KB per JPEG
    ctx, _ = run_sinks(cfg, noisy)
    ours = sorted(p for p in save.iterdir() if p.name.startswith("edgecls-2"))
    assert ctx.summary.saved == 30
    assert sum(p.stat().st_size for p in ours) <= 0.02 * 1024 * 1024
    assert 1 <= len(ours) < 30 and "-f00000029-" in ours[-1].name  # the newest stay
    assert (save / "mine.jpg").exists() and (save / "edgecls-notes.txt").exists()


def test_a_save_quota_below_one_frame_keeps_the_newest_and_says_so(tmp_path):
    save = tmp_path / "saved"
    logs = []
    cfg = config(save_dir=str(save), save_max_mb=0.001)  # 1 KB: less than any of these JPEGs
    noisy = [record(i) for i in range(5)]
    rng = np.random.default_rng(0)
    for r in noisy:
        r.image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ctx, _ = run_sinks(cfg, noisy, context(logs))
    ours = sorted(p.name for p in save.iterdir())
    assert ctx.summary.saved == 5 and len(ours) == 1 and "-f00000004-" in ours[0]
    assert sum("larger than the quota" in m for m in logs) == 1, logs


def test_a_recording_is_finished_playable_before_the_disk_fills(tmp_path, monkeypatch):
    """OpenCV's writer says nothing when the disk is full, and an MP4 cut off before its index
    is written plays nowhere: the sink finishes it while there is room."""
    import collections

    from edgecls.runtime.sinks import recording

    looks = []
    usage = collections.namedtuple("usage", "total used free")

    def disk_usage(path):  # plenty of room for the first seconds, then 10 MB
        looks.append(path)
        return usage(1 << 40, 0, (1 << 40) if len(looks) <= 4 else 10 << 20)

    monkeypatch.setattr(recording.shutil, "disk_usage", disk_usage)
    video, logs = tmp_path / "line.mp4", []
    events = [record(i) for i in range(100)]
    for i, r in enumerate(events):
        r.time = 1_700_000_000.0 + i * 0.1  # 10 frames a second
    ctx, _ = run_sinks(config(record=str(video)), events, context(logs))
    cap = cv2.VideoCapture(str(video))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    assert cap.isOpened() and cap.read()[0] and 20 <= frames < 100
    assert sum("the recording was finished at" in m for m in logs) == 1, logs
    assert ctx.summary.output_errors["record"] >= 1


def test_full_disk_is_reported_once_counted_and_the_sink_goes_on(tmp_path, monkeypatch):
    from edgecls.runtime.sinks import frames

    save = tmp_path / "saved"
    real = frames.FramesSink._write
    calls = []

    def flaky(self, path, data):
        calls.append(path)
        if 3 <= len(calls) <= 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, data)

    monkeypatch.setattr(frames.FramesSink, "_write", flaky)
    logs = []
    ctx, _ = run_sinks(config(save_dir=str(save)), [record(i) for i in range(10)], context(logs))
    assert ctx.summary.saved == 6 and ctx.summary.output_errors["frames"] == 4
    warned = [m for m in logs if "output frames failed" in m]
    assert len(warned) == 1 and "No space left on device" in warned[0]
    assert not list(save.glob(".edgecls-tmp-*"))  # no half-written files


def test_saving_frames_pauses_while_the_disk_is_nearly_full(tmp_path, monkeypatch):
    """Frames never take the last 64 MB a board needs (its journal, log, recording): saving
    pauses, each frame not saved is counted, and saving resumes once there is room again; free
    space that hovers at the reserve does not flip it every frame."""
    import collections

    from edgecls.runtime.sinks import DISK_RESERVE_BYTES, frames

    usage = collections.namedtuple("usage", "total used free")
    looks, hovering = [], [-(1 << 20), 4 << 20]  # 1 MB below the reserve, 4 MB above it

    def disk_usage(path):  # room for 3 frames, then hovering at the reserve for 6, then room
        looks.append(path)
        n = len(looks)
        return usage(1 << 40, 0, DISK_RESERVE_BYTES + hovering[n % 2] if 4 <= n <= 9 else 1 << 40)

    monkeypatch.setattr(frames.shutil, "disk_usage", disk_usage)
    save, logs = tmp_path / "saved", []
    ctx, _ = run_sinks(config(save_dir=str(save)), [record(i) for i in range(12)], context(logs))
    saved = sorted(p.name for p in save.iterdir())
    assert len(saved) == ctx.summary.saved == 6
    assert [int(re.search(r"-f(\d+)-", n)[1]) for n in saved] == [0, 1, 2, 9, 10, 11]
    assert ctx.summary.outputs_dropped["frames"] == 6 and not ctx.summary.output_errors
    paused = [m for m in logs if "frames are not saved" in m]
    assert len(paused) == 1 and re.search(r"has 6\d MB left", paused[0]), logs
    assert str(save) in paused[0] and sum("saving frames" in m for m in logs) == 1, logs
    assert all(Path(p) == save for p in looks)


def test_a_saved_frames_quota_rotates_on_a_nearly_full_disk(tmp_path, monkeypatch):
    """At its --save-max-mb quota each saved frame deletes an older one, so a folder at its quota
    on a nearly full card needs no more room: it rotates on rather than pausing for good."""
    import collections

    from edgecls.runtime.sinks import DISK_RESERVE_BYTES, frames

    save = tmp_path / "saved"
    events = [record(i) for i in range(10)]
    size = len(cv2.imencode(".jpg", events[0].image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1])
    usage = collections.namedtuple("usage", "total used free")

    def disk_usage(path):  # the card: room for 2.5 frames above the reserve, no more
        held = sum(p.stat().st_size for p in save.iterdir())
        return usage(1 << 40, 0, DISK_RESERVE_BYTES + int(2.5 * size) - held)

    monkeypatch.setattr(frames.shutil, "disk_usage", disk_usage)
    quota = 2.5 * size / (1 << 20)  # two frames fit; a third deletes the oldest
    ctx, _ = run_sinks(config(save_dir=str(save), save_max_mb=quota), events)
    assert ctx.summary.saved == 10 and not ctx.summary.outputs_dropped
    left = sorted(int(re.search(r"-f(\d+)-", p.name)[1]) for p in save.iterdir())
    assert left == [8, 9]


def test_unwritable_outputs_fail_at_start_with_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgeclsError, match=r"--save-dir .*file/sub: cannot write"):
        build_sinks(config(save_dir=str(blocker / "sub")), context()).open()
    with pytest.raises(EdgeclsError, match=r"--record .*file: exists and is not a folder"):
        build_sinks(config(record=str(blocker / "out.mp4")), context()).open()
    with pytest.raises(EdgeclsError, match=r"--record .*: use one of"):
        build_sinks(config(record=str(tmp_path / "out.txt")), context()).open()

    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(EdgeclsError, match=r"--save-dir .*Read-only file system"):
        build_sinks(config(save_dir=str(tmp_path / "ro")), context()).open()
