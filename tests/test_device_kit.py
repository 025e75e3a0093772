"""The board kit: Picamera2 and GStreamer sources, sd_notify and the watchdog, doctor on a broken
runtime, and the install script and systemd unit as they would be installed."""

from __future__ import annotations

import importlib.abc
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import tomllib
from typer.testing import CliRunner

from edgecls.bundle.preprocess import frame_to_input
from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.runtime import doctor, systemd
from edgecls.runtime.sources import CaptureSettings, SourceEnded, cameras, open_source

REPO = Path(__file__).resolve().parents[1]

# A pure red scene as the sensor sees it: Picamera2's "RGB888" is [B, G, R] in numpy.
RED_BGR = (0, 0, 255)


class FakePicamera2:
    """A stand-in with Picamera2's API: records what edgecls asks of it, yields scripted frames."""

    opened: ClassVar[list[FakePicamera2]] = []
    # One entry per camera opened, in order: frames before it drops (capture_array raises), None
    # for frames forever, or an exception the constructor raises. Past the end: forever.
    plan: ClassVar[list] = []
    grey = False
    infos: ClassVar[list[dict]] = [
        {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/i2c@88000", "Num": 0}
    ]

    def __init__(self, camera_num=0):
        step = self.plan.pop(0) if self.plan else None
        if isinstance(step, Exception):
            raise step
        self.frames_before_drop = step
        self.camera_num = camera_num
        self.config_args: dict | None = None
        self.configured = self.started = self.stopped = False
        self.closed = threading.Event()  # set by close(), from whichever thread releases it
        self.captured = 0
        self.opened.append(self)

    @staticmethod
    def global_camera_info():
        return FakePicamera2.infos

    def create_video_configuration(self, main=None, controls=None, **kwargs):
        self.config_args = {"main": main, "controls": controls, **kwargs}
        # Picamera2's video configuration runs at 30 FPS unless told otherwise.
        defaults = {"FrameDurationLimits": (33333, 33333), "NoiseReductionMode": 1}
        return {
            "use_case": "video",
            "main": dict(main),
            "controls": {**defaults, **(controls or {})},
        }

    def configure(self, config):
        assert config["use_case"] == "video"
        self.configured = True

    def start(self):
        assert self.configured, "Picamera2 needs configure() before start()"
        self.started = True

    def capture_array(self, name="main"):
        assert name == "main" and self.started and not self.stopped
        if self.frames_before_drop is not None and self.captured >= self.frames_before_drop:
            raise RuntimeError("Camera frontend has timed out!")
        self.captured += 1
        threading.Event().wait(0.002)  # a camera's frame period, so the capture thread yields
        width, height = self.config_args["main"]["size"]
        if self.grey:
            return np.full((height, width), 77, np.uint8)
        return np.broadcast_to(np.array(RED_BGR, np.uint8), (height, width, 3)).copy()

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed.set()


def _released(cam: FakePicamera2) -> bool:
    """Stopped and closed; LiveSource's worker releases its capture on its own thread."""
    return cam.closed.wait(timeout=10) and cam.stopped


@pytest.fixture
def picamera2(monkeypatch):
    """Inject the stand-in as the `picamera2` module, fresh state per test."""
    module = types.ModuleType("picamera2")

    class Camera(FakePicamera2):
        opened: ClassVar[list] = []
        plan: ClassVar[list] = []

    module.Picamera2 = Camera
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return Camera


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("picamera2", True),
        ("picamera2:1", True),
        ("PiCamera2:0", True),
        ("picamera2:x", False),
        ("0", False),
        ("picamera2.mp4", False),
        ("rtsp://picamera2", False),
    ],
)
def test_picamera2_spec(spec, ok):
    assert cameras.matches_picamera2(spec) is ok


def test_picamera2_frames_are_bgr_with_the_settings_asked(picamera2):
    source = cameras.make_picamera2_source("picamera2:1", CaptureSettings(320, 240, 15))
    try:
        assert source.live and source.reconnects == 0 and "picamera2 camera 1" in source.name
        assert source.fps == 15.0  # what a recording is written at
        frames = [source.read() for _ in range(3)]
    finally:
        source.close()
    (cam,) = picamera2.opened
    assert cam.camera_num == 1
    assert cam.config_args["main"] == {"size": (320, 240), "format": "RGB888"}
    assert cam.config_args["controls"] == {"FrameRate": 15.0}
    assert [f.index for f in frames] == sorted({f.index for f in frames})
    image = frames[-1].image
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == RED_BGR
    # Through the loop's own preprocessing: the model sees red as red.
    rgb = frame_to_input(image, (32, 32))
    assert rgb.shape == (32, 32, 3) and tuple(rgb[5, 5]) == (255, 0, 0)
    assert _released(cam)


def test_picamera2_through_the_source_table(picamera2):
    stop = threading.Event()
    source = open_source("picamera2:0", CaptureSettings(48, 32, 10), stop=stop)
    try:
        assert source.read().image.shape == (32, 48, 3)
        stop.set()  # the loop's signal event ends it
        with pytest.raises(SourceEnded):
            source.read()
    finally:
        source.close()
    assert _released(picamera2.opened[0])


def test_picamera2_default_size_and_no_frame_rate(picamera2):
    source = cameras.make_picamera2_source("picamera2", CaptureSettings())
    source.close()
    (cam,) = picamera2.opened
    assert cam.camera_num == 0
    assert cam.config_args["main"]["size"] == cameras.DEFAULT_SIZE
    assert cam.config_args["controls"] is None
    assert source.fps == pytest.approx(30.0, abs=0.01)  # Picamera2's default frame duration


def test_picamera2_grey_frames_become_three_channels(picamera2):
    picamera2.grey = True
    source = cameras.make_picamera2_source("picamera2", CaptureSettings(64, 48))
    try:
        image = source.read().image
    finally:
        source.close()
    assert image.shape == (48, 64, 3) and (image == 77).all()


def test_picamera2_four_channel_frames_drop_alpha():
    xrgb = np.zeros((4, 6, 4), np.uint8)
    xrgb[..., :3] = RED_BGR
    xrgb[..., 3] = 255
    assert cameras.to_bgr(xrgb).shape == (4, 6, 3)
    assert tuple(cameras.to_bgr(xrgb)[1, 1]) == RED_BGR


def test_picamera2_dropped_camera_is_reopened(picamera2):
    picamera2.plan = [2, None]  # the first camera drops after two frames, the second one works
    logs: list[str] = []
    source = cameras.make_picamera2_source("picamera2", CaptureSettings(32, 24), log=logs.append)
    try:
        seen = [source.read()]
        while source.reconnects == 0 or len(seen) < 5:  # each read waits for a new frame
            seen.append(source.read())
            assert len(seen) < 500, "never reopened"
    finally:
        source.close()
    first, second = picamera2.opened
    assert _released(first) and first.captured == 2 and second.captured >= 1
    assert source.reconnects == 1 and any("reopened" in line for line in logs), logs
    assert all(f.image.shape == (24, 32, 3) for f in seen)
    assert _released(second)


def test_picamera2_that_cannot_be_reopened_ends_the_source(picamera2):
    picamera2.plan = [1, RuntimeError("Failed to acquire camera: Device or resource busy")]
    source = cameras.make_picamera2_source(
        "picamera2", CaptureSettings(32, 24), max_reconnects=0, log=lambda _: None
    )
    try:
        assert source.read().image.shape == (24, 32, 3)
        with pytest.raises(SourceEnded):
            for _ in range(10):
                source.read()
    finally:
        source.close()
    assert len(picamera2.opened) == 1 and _released(picamera2.opened[0])


def test_picamera2_missing_module_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # `import picamera2` raises ImportError
    with pytest.raises(EdgeclsError) as info:
        cameras.make_picamera2_source("picamera2", CaptureSettings())
    message = str(info.value)
    assert "\n" not in message
    assert "python3-picamera2" in message and "--system-site-packages" in message


def test_picamera2_camera_that_cannot_open(picamera2):
    picamera2.plan = [IndexError("list index out of range")]
    with pytest.raises(EdgeclsError, match=r"cannot open camera 3 .*IndexError"):
        cameras.make_picamera2_source("picamera2:3", CaptureSettings())


def test_libcamera_cameras_lists_the_stand_in(picamera2, monkeypatch):
    assert cameras.libcamera_cameras() == ["picamera2:0 imx708 (2)"]
    monkeypatch.setitem(sys.modules, "picamera2", None)
    assert cameras.libcamera_cameras() == []


def test_gstreamer_pipeline_without_gstreamer_is_one_line(monkeypatch):
    pipeline = "libcamerasrc ! videoconvert ! appsink"
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n    GStreamer: NO\n")
    assert not cameras.gstreamer_available()
    with pytest.raises(EdgeclsError) as info:
        cameras.check_gstreamer(pipeline)
    message = str(info.value)
    assert "\n" not in message and pipeline in message
    assert "built without GStreamer" in message and "apt install python3-opencv" in message
    assert "--system-site-packages" in message
    monkeypatch.setattr(
        cv2, "getBuildInformation", lambda: "    GStreamer:                   YES (1.22.0)\n"
    )
    assert cameras.gstreamer_available()
    cameras.check_gstreamer(pipeline)  # no error where OpenCV can run it


def test_gstreamer_source_on_pip_opencv_fails_before_opening(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "    GStreamer: NO\n")
    opened = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: opened.append(a))
    with pytest.raises(EdgeclsError, match="built without GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")
    assert opened == []  # OpenCV's own "cannot open" never comes into it


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A real unix datagram socket where systemd would listen, named in $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _pending(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(5)


def test_sd_notify_ready_status_stopping(notify_socket):
    assert systemd.ready() and systemd.status("classifying\n camera 0") and systemd.stopping()
    got = [notify_socket.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1", "STATUS=classifying camera 0", "STOPPING=1"]


def test_sd_notify_abstract_socket(monkeypatch):
    name = f"edgecls-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert sock.recv(4096) == b"READY=1"


def test_sd_notify_is_a_no_op_outside_systemd(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert not systemd.ready() and not systemd.Watchdog().ping()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))  # systemd went away: no crash
    assert not systemd.status("x")


def test_watchdog_pings_at_half_the_interval(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2 -> a ping every second at most
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    now = [100.0]
    dog = systemd.Watchdog(clock=lambda: now[0])
    assert dog.enabled and dog.interval == 1.0
    sent = []
    for t in (100.0, 100.3, 100.99, 101.0, 101.5, 102.2, 102.3):
        now[0] = t
        sent.append(dog.ping())
    assert sent == [True, False, False, True, False, True, False]
    assert _pending(notify_socket) == ["WATCHDOG=1"] * 3 and dog.sent == 3


@pytest.mark.parametrize(("usec", "pid"), [("", None), ("0", None), ("x", None), ("5000000", "1")])
def test_watchdog_off(notify_socket, monkeypatch, usec, pid):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid:
        monkeypatch.setenv("WATCHDOG_PID", pid)  # meant for another process
    else:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    dog = systemd.Watchdog()
    assert not dog.enabled and not dog.ping()
    assert _pending(notify_socket) == []


class _BrokenImport(importlib.abc.MetaPathFinder):
    """Makes `import NAME` (and its submodules) fail the way a bad wheel does."""

    def __init__(self, failures: dict[str, Exception]):
        self.failures = failures

    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in self.failures:
            raise self.failures[top]
        return None


def _break_imports(monkeypatch, failures: dict[str, Exception]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in failures:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenImport(failures), *sys.meta_path])


def test_doctor_reports_broken_runtimes_instead_of_crashing(monkeypatch, picamera2):
    _break_imports(
        monkeypatch,
        {
            "onnxruntime": ImportError("libcublasLt.so.12: cannot open shared object file"),
            "ai_edge_litert": RuntimeError("module compiled against ABI version 0x1000009"),
        },
    )
    report = doctor.doctor()
    status = report["runtime_status"]
    assert status["onnxruntime"].startswith("broken: ImportError: libcublasLt.so.12")
    assert status["ai-edge-litert"].startswith("broken: RuntimeError: module compiled")
    assert report["onnxruntime_providers"] is None
    assert report["runtimes"]["onnxruntime"]  # installed (its version is known), yet broken
    # the rest of the report is still there, cameras through the Picamera2 stand-in included
    assert report["architecture"] and report["cores"] == os.cpu_count()
    assert report["picamera2"] == "ok"
    assert report["libcamera_cameras"] == ["picamera2:0 imx708 (2)"]
    assert isinstance(report["gstreamer"], bool)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0 and "broken: ImportError" in result.stdout


def test_doctor_without_picamera2(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    report = doctor.doctor()
    assert report["picamera2"] == "not installed" and report["libcamera_cameras"] == []
    assert report["runtime_status"]["onnxruntime"] == "ok"
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]


# --- the install script and the unit as it would be installed ---------------------------------

INSTALL = REPO / "device" / "install.sh"


def _install(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, env=env, timeout=60
    )


def _systemd_version() -> int:
    if not shutil.which("systemd-analyze"):
        return 0
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_install_script_is_shellcheck_clean():
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(_systemd_version() < 250, reason="needs systemd-analyze security --offline")
@pytest.mark.parametrize("board", ["pi", "jetson"])
def test_unit_as_installed_verifies_and_is_sandboxed(board, tmp_path):
    rendered = _install("--print-unit", "--board", board, "--venv", sys.prefix)
    assert rendered.returncode == 0, rendered.stderr
    unit = tmp_path / "edgecls.service"
    unit.write_text(rendered.stdout)
    text = rendered.stdout
    assert not re.search(r"@[A-Z]+@", text)  # every field filled in
    for line in (
        f"ExecStart={sys.prefix}/bin/edgecls run --config /etc/edgecls/device.yaml",
        "Type=notify",
        "NotifyAccess=main",
        "RestartPreventExitStatus=2",
        "EnvironmentFile=-/etc/edgecls/edgecls.env",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
    ):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+$", text, re.MULTILINE)
    assert ("DeviceAllow=\n" in text) is (board == "jetson")  # the Jetson lifts the device filter
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=45", str(unit)],
        capture_output=True,
        text=True,
    )
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout).group(1))
    print(f"\n[{board}] systemd-analyze security: {score}")
    assert security.returncode == 0 and score <= 4.5, security.stdout[-2000:]


def test_install_refuses_32_bit_arm(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uname").write_text('#!/bin/sh\n[ "$1" = -m ] && echo armv7l || echo Linux\n')
    (fake / "uname").chmod(0o755)
    venv = tmp_path / "venv"
    result = _install("--no-apt", "--venv", str(venv), path=f"{fake}:{os.environ['PATH']}")
    assert result.returncode == 1
    assert "32-bit ARM (armv7l)" in result.stderr and "LiteRT" in result.stderr
    assert "64-bit" in result.stderr and not venv.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["--venv"], "--venv needs a value"),
        (["--board", "beaglebone"], "expected pi, jetson or generic"),
        (["--ort-wheel", "/nonexistent/onnxruntime_gpu.whl"], "no such file"),
        (["--service", "/nonexistent/bundle"], "no manifest.json"),
    ],
)
def test_install_bad_option_is_exit_2(args, says):
    result = _install(*args)
    assert result.returncode == 2 and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~; \[]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


def test_device_requirements_match_the_device_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["device"])
    lines = (REPO / "device" / "requirements.txt").read_text().splitlines()
    listed = _names([x for x in lines if x.strip() and not x.startswith("#")])
    assert listed == wanted
    assert not listed & {"tensorflow", "keras", "tf2onnx", "shap"}


@pytest.mark.parametrize(
    "spec",
    [
        "0",
        "picamera2:1",
        "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280 ! appsink name='x'",
    ],
)
def test_service_settings_file_loads_as_run_options(spec, tmp_path):
    from edgecls.runtime.loop_options import merge_options, read_device_file

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    written = _install("--print-config", "--service", str(bundle), "--source", spec)
    assert written.returncode == 0, written.stderr
    path = tmp_path / "device.yaml"
    path.write_text(written.stdout)
    options = merge_options(read_device_file(path), {})
    assert options.source == spec and Path(options.bundle) == bundle.resolve()
    assert options.headless and str(options.log_file).startswith("/var/log/edgecls/")
