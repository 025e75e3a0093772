"""Raspberry Pi camera modules through Picamera2, and what this OpenCV can open.

A camera module on a Pi 5 (and on a Pi 4 with the libcamera stack) is not a V4L2 device OpenCV
can read, and pip's OpenCV has no GStreamer for `rpicam-vid` pipelines: Picamera2 (Debian's
`python3-picamera2`) is the way to read it. `--source picamera2` (or `picamera2:N` for camera
N) wraps it in a capture object with OpenCV's `VideoCapture` interface, so `LiveSource` gives it
the same capture thread, newest-frame-only reading and reconnect with back-off as any camera.
"""

from __future__ import annotations

import contextlib
import importlib
import re

import cv2
import numpy as np

from edgecls.errors import EdgeclsError, SourceUnavailable
from edgecls.runtime.sources.base import CaptureSettings
from edgecls.runtime.sources.live import LiveSource

PICAMERA2_SPEC = re.compile(r"picamera2(?::(\d+))?", re.IGNORECASE)
DEFAULT_SIZE = (640, 480)
INSTALL_PICAMERA2 = (
    "install it with `sudo apt install python3-picamera2` and give the venv the system's "
    "packages (`bash device/install.sh --system-site-packages`)"
)


def matches_picamera2(spec: str) -> bool:
    return PICAMERA2_SPEC.fullmatch(spec.strip()) is not None


def _camera_number(spec: str) -> int:
    match = PICAMERA2_SPEC.fullmatch(spec.strip())
    if match is None:
        raise EdgeclsError(f"--source {spec}: expected picamera2 or picamera2:N")
    return int(match.group(1) or 0)


def _picamera2_class():
    """The Picamera2 class, or one line that says how to get it."""
    try:
        return importlib.import_module("picamera2").Picamera2
    except ImportError as exc:
        raise EdgeclsError(
            f"--source picamera2: the picamera2 module cannot be imported ({exc}); "
            + INSTALL_PICAMERA2
        ) from None


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A Picamera2 array as the BGR uint8 frame the loop expects.

    Picamera2's "RGB888" is [B, G, R] per pixel in numpy (libcamera names formats by their
    little-endian word): already BGR. 4-channel XRGB8888 is [B, G, R, 255]; grey (2-D, or one
    channel) is expanded, since the loop's overlay, recording and `frame_to_input` all take 3
    channels."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)  # Picamera2 may hand over a view with padded rows


class Picamera2Capture:
    """One Picamera2 camera behind OpenCV's VideoCapture interface (isOpened, read, release)."""

    def __init__(self, camera_num: int, settings: CaptureSettings, picamera2_class=None):
        cls = picamera2_class or _picamera2_class()
        self.camera_num = camera_num
        self._cam = None
        self.error = ""
        try:
            cam = cls(camera_num)
        except Exception as exc:  # libcamera raises RuntimeError, IndexError, ...
            self.error = f"{type(exc).__name__}: {exc}"
            return
        try:
            config = cam.create_video_configuration(**video_configuration(settings))
            cam.configure(config)
            cam.start()
        except Exception as exc:  # a bad size or rate for this sensor
            self.error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                cam.close()
            return
        self._cam = cam
        self._props = {
            cv2.CAP_PROP_FPS: frame_rate(config),
            cv2.CAP_PROP_FRAME_WIDTH: float(config["main"]["size"][0]),
            cv2.CAP_PROP_FRAME_HEIGHT: float(config["main"]["size"][1]),
        }

    def get(self, prop: int) -> float:
        """OpenCV's property call, for what the loop asks (the frame rate a recording is written
        at); 0.0 for anything else, as OpenCV answers for what a backend does not know."""
        return self._props.get(prop, 0.0) if self._cam is not None else 0.0

    def isOpened(self) -> bool:  # OpenCV's name, so LiveSource takes it as is
        return self._cam is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._cam is None:
            return False, None
        try:
            return True, to_bgr(self._cam.capture_array("main"))
        except Exception:  # a camera that dropped: LiveSource reopens it
            return False, None

    def release(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        # A camera that already failed may refuse both; releasing must never crash the loop.
        with contextlib.suppress(Exception):
            cam.stop()
        with contextlib.suppress(Exception):
            cam.close()


def video_configuration(settings: CaptureSettings) -> dict:
    """Picamera2's create_video_configuration arguments for --width --height --fps."""
    size = (settings.width or DEFAULT_SIZE[0], settings.height or DEFAULT_SIZE[1])
    config: dict = {"main": {"size": size, "format": "RGB888"}}
    if settings.fps:
        config["controls"] = {"FrameRate": float(settings.fps)}
    return config


def frame_rate(config) -> float:
    """The rate a configuration runs at: its FrameRate control, else the shortest frame duration
    (Picamera2's video configuration defaults to FrameDurationLimits 33333 us: 30 FPS)."""
    try:
        controls = config["controls"] or {}
        if controls.get("FrameRate"):
            return float(controls["FrameRate"])
        return 1e6 / float(controls["FrameDurationLimits"][0])
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


def make_picamera2_source(spec: str, settings: CaptureSettings, **live_options) -> LiveSource:
    """The LiveSource for `picamera2` / `picamera2:N`."""
    number = _camera_number(spec)
    cls = _picamera2_class()
    first = Picamera2Capture(number, settings, cls)
    if not first.isOpened():  # may come (a late camera): exit 1, a service retries
        raise SourceUnavailable(
            f"--source {spec}: cannot open camera {number} through Picamera2 ({first.error}); "
            "list the cameras with `rpicam-hello --list-cameras` or `edgecls doctor`"
        )
    pending = [first]

    def opener():
        # The capture opened above to check the camera is handed over once; reconnects open anew.
        return pending.pop() if pending else Picamera2Capture(number, settings, cls)

    return LiveSource(f"picamera2 camera {number}", opener, **live_options)


def gstreamer_available() -> bool:
    """Whether this OpenCV was built with GStreamer (pip's opencv-python wheels are not)."""
    return "GStreamer: YES" in " ".join(cv2.getBuildInformation().split())


def gstreamer_missing_message(spec: str) -> str:
    """The one line for a GStreamer pipeline on an OpenCV that cannot run one."""
    return (
        f"--source {spec}: this looks like a GStreamer pipeline, but OpenCV here "
        f"({cv2.__version__}) was built without GStreamer (pip's opencv-python wheels are); "
        "install the system's GStreamer-enabled OpenCV (`sudo apt install python3-opencv "
        "gstreamer1.0-plugins-good`, on a Jetson JetPack's) and give the venv the system's "
        "packages with `bash device/install.sh --system-site-packages`, or on a Pi camera module "
        "use --source picamera2"
    )


def check_gstreamer(spec: str) -> None:
    """Raise the one-line error before OpenCV's generic "cannot open" would."""
    if not gstreamer_available():
        raise EdgeclsError(gstreamer_missing_message(spec))


def libcamera_cameras() -> list[str]:
    """The cameras libcamera sees, as "N: model (location)"; empty without picamera2."""
    try:
        cls = importlib.import_module("picamera2").Picamera2
        infos = cls.global_camera_info()
    except Exception:  # no picamera2, no libcamera, no cameras: nothing to list
        return []
    cameras = []
    for i, info in enumerate(infos):
        where = info.get("Location", info.get("Id", ""))
        cameras.append(f"picamera2:{info.get('Num', i)} {info.get('Model', '?')} ({where})")
    return cameras
