"""Frame sources behind one interface: camera index, video file, RTSP/HTTP URL, GStreamer pipeline,
Picamera2 camera, image folder or glob.

Live sources are read on a capture thread that keeps only the newest frame, so a slow model never
works through a stale backlog; a live source that drops is reopened with back-off. Files are read
frame by frame, in order, and their end ends the loop. `open_source` picks the kind for --source
from the SOURCES registry.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from edgecls.bundle.preprocess import is_image_file
from edgecls.errors import EdgeclsError
from edgecls.redact import redact
from edgecls.registry import Registry
from edgecls.runtime.sources.base import CaptureSettings, Frame, Source, SourceEnded
from edgecls.runtime.sources.cameras import (
    check_gstreamer,
    make_picamera2_source,
    matches_picamera2,
)
from edgecls.runtime.sources.files import FileSource, ImageFolderSource, Prefetch
from edgecls.runtime.sources.live import LiveSource

__all__ = [
    "SOURCES",
    "CaptureSettings",
    "FileSource",
    "Frame",
    "ImageFolderSource",
    "LiveSource",
    "Prefetch",
    "Source",
    "SourceEnded",
    "SourceKind",
    "frame_size",
    "open_source",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".ts")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def _camera_opener(index: int, settings: CaptureSettings):
    def open_camera():
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(index, api)
        if cap.isOpened():
            cap.set(
                cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG")
            )  # ignored where not offered
            if settings.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
            if settings.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
            if settings.fps:
                cap.set(cv2.CAP_PROP_FPS, settings.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    return open_camera


# How long a stream may take to open or to deliver the next frame before OpenCV's FFmpeg backend
# gives up (so a silent socket ends a read instead of blocking a thread for good).
STREAM_TIMEOUT_MS = 5000


def _stream_opener(url: str):
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    return lambda: cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _gstreamer(spec: str, settings: CaptureSettings, stop) -> LiveSource:
    check_gstreamer(redact(spec))  # the spec only names the pipeline in its error
    opener = lambda: cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)  # noqa: E731
    return LiveSource("gstreamer pipeline", opener, stop=stop)


def _picamera2(spec: str, settings: CaptureSettings, stop) -> LiveSource:
    return make_picamera2_source(spec, settings, stop=stop)


def _is_images(spec: str) -> bool:
    path = Path(spec)
    return (
        path.is_dir() or any(ch in spec for ch in "*?[") or (path.is_file() and is_image_file(path))
    )


def _asked_size(spec: str, settings: CaptureSettings) -> tuple[int, int] | None:
    return (settings.width, settings.height) if settings.width and settings.height else None


def _video_size(spec: str, settings: CaptureSettings) -> tuple[int, int] | None:
    cap = cv2.VideoCapture(spec)
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return (w, h) if w > 0 and h > 0 else None


@dataclass(frozen=True)
class SourceKind:
    matches: Callable[[str], bool]
    make: Callable[[str, CaptureSettings, threading.Event | None], Source]
    # the frame size (width, height) as far as it is known before the source opens, for the
    # measurement that picks the artifact; None where only the first frame will tell
    size: Callable[[str, CaptureSettings], tuple[int, int] | None] = _asked_size


SOURCES: Registry[SourceKind] = Registry("source kind")
SOURCES.add(
    "camera",
    SourceKind(
        # a folder or file named 2024 is that folder or file, not camera 2024
        lambda s: s.isdigit() and not Path(s).exists(),
        lambda s, c, stop: LiveSource(f"camera {s}", _camera_opener(int(s), c), stop=stop),
    ),
)
SOURCES.add("picamera2", SourceKind(matches_picamera2, _picamera2))
SOURCES.add("gstreamer", SourceKind(lambda s: "!" in s, _gstreamer))
SOURCES.add(
    "stream",
    SourceKind(
        lambda s: s.lower().startswith(URL_SCHEMES),
        # the real URL goes to OpenCV; records, logs and errors name it without its user info
        lambda s, c, stop: LiveSource(redact(s, keep_user=False), _stream_opener(s), stop=stop),
    ),
)
SOURCES.add("images", SourceKind(_is_images, lambda s, c, stop: Prefetch(ImageFolderSource(s))))
SOURCES.add(
    "video",
    SourceKind(
        lambda s: Path(s).is_file(), lambda s, c, stop: Prefetch(FileSource(s)), _video_size
    ),
)


def _kind(spec: str) -> SourceKind | None:
    return next((kind for kind in SOURCES.values() if kind.matches(spec)), None)


def frame_size(spec: str, settings: CaptureSettings = CaptureSettings()) -> tuple[int, int] | None:
    """--source's frame size (width, height) before it opens, where it can be known."""
    kind = _kind(spec)
    return kind.size(spec, settings) if kind else None


def open_source(
    spec: str, settings: CaptureSettings = CaptureSettings(), stop: threading.Event | None = None
) -> Source:
    """The Source for --source: the first kind in SOURCES that recognises it. A live
    source's waits wake on `stop` (the loop's signal event)."""
    kind = _kind(spec)
    if kind is not None:
        return kind.make(spec, settings, stop)
    hint = " (a video file?)" if spec.lower().endswith(VIDEO_SUFFIXES) else ""
    raise EdgeclsError(
        f"--source {redact(spec)}: not found{hint}; give a camera index, a video file, an image "
        "folder or glob, an rtsp/http URL, picamera2[:N], or a GStreamer pipeline"
    )
