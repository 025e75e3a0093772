"""Frame sources behind one interface: camera index, video file, RTSP/HTTP URL, GStreamer pipeline,
image folder or glob.

Live sources are read on a capture thread that keeps only the newest frame, so a slow model never
works through a stale backlog; a live source that drops is reopened with back-off. Files are read
frame by frame, in order, and their end ends the loop.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.runtime.preprocess import image_paths, is_image_file, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".ts")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class CaptureSettings:
    width: int | None = None
    height: int | None = None
    fps: int | None = None


@dataclass
class Frame:
    index: int  # position in the source (frames read, corrupt ones included)
    image: np.ndarray | None  # BGR uint8; None for a corrupt frame
    name: str = ""


class SourceEnded(Exception):
    """A file source reached its end, or a live source could not be reopened."""


def _valid(image) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.size > 0
        and image.dtype == np.uint8
    )


class FileSource:
    """A video file, read in order."""

    live = False

    def __init__(self, path: str):
        self.name = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise EdgeclsError(
                f"--source {path}: cannot open this video (unknown codec or not a video)"
            )
        self._index = 0
        self.reconnects = 0

    def read(self) -> Frame:
        ok, image = self._cap.read()
        if not ok:
            # OpenCV reports both the end and an undecodable frame as "not ok": tell them apart by
            # whether the position still moves
            total = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
            if total <= 0 or self._index >= total - 1:
                raise SourceEnded
            self._index += 1
            if not self._cap.grab():
                raise SourceEnded
            return Frame(self._index - 1, None)
        self._index += 1
        return Frame(self._index - 1, image if _valid(image) else None)

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource:
    """Images of a folder (sorted) or a glob, one frame each; unreadable ones are corrupt frames."""

    live = False

    def __init__(self, spec: str):
        self.paths = [p for p in image_paths(spec) if p.is_file() and is_image_file(p)]
        if not self.paths:
            raise EdgeclsError(f"--source {spec}: no images found (jpg, jpeg, png, bmp, webp)")
        self.name = spec
        self._iter: Iterator[tuple[int, Path]] = enumerate(self.paths)
        self.reconnects = 0

    def read(self) -> Frame:
        try:
            i, path = next(self._iter)
        except StopIteration:
            raise SourceEnded from None
        try:
            return Frame(i, cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR), path.name)
        except EdgeclsError:
            return Frame(i, None, path.name)

    def close(self) -> None:
        pass


class LiveSource:
    """A camera, stream or pipeline: newest frame only, reopened with back-off when it drops."""

    live = True

    def __init__(
        self,
        name: str,
        opener: Callable[[], cv2.VideoCapture],
        *,
        frame_timeout: float = 5.0,
        max_backoff: float = 30.0,
        max_reconnects: int | None = None,
        log=None,
    ):
        self.name = name
        self._opener = opener
        self._timeout = frame_timeout
        self._max_backoff = max_backoff
        self._max_reconnects = max_reconnects
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._seq = 0
        self._taken = 0
        self._failed = False
        self._stop = threading.Event()
        self.reconnects = 0
        self.dropped_frames = 0  # frames replaced before the model saw them
        self._cap = self._open_or_fail()
        self._thread = self._start()

    def _open_or_fail(self):
        cap = self._opener()
        if cap is None or not cap.isOpened():
            raise EdgeclsError(
                f"--source {self.name}: cannot open (no such camera, stream or "
                "pipeline; check the index/URL and that nothing else holds it)"
            )
        return cap

    def _start(self) -> threading.Thread:
        self._failed = False
        thread = threading.Thread(target=self._capture, args=(self._cap,), daemon=True)
        thread.start()
        return thread

    def _capture(self, cap) -> None:
        while not self._stop.is_set():
            ok, image = cap.read()
            with self._cond:
                if not ok:
                    self._failed = True
                    self._cond.notify_all()
                    return
                if self._seq > self._taken:
                    self.dropped_frames += 1
                self._latest, self._seq = image, self._seq + 1
                self._cond.notify_all()

    def read(self) -> Frame:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._seq > self._taken or self._failed or self._stop.is_set(),
                    timeout=self._timeout,
                )
                if self._stop.is_set():
                    raise SourceEnded
                if self._seq > self._taken:
                    self._taken = self._seq
                    image = self._latest
                    return Frame(self._seq - 1, image if _valid(image) else None)
                reason = (
                    "stopped delivering frames"
                    if self._failed
                    else f"no frame for {self._timeout:.0f} s"
                )
            self._reconnect(reason)

    def _reconnect(self, reason: str) -> None:
        self._cap.release()
        delay = 0.5
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            if (
                self._max_reconnects is not None
                and self.reconnects + attempt > self._max_reconnects + 1
            ):
                raise SourceEnded
            self._log(
                f"source {self.name} {reason}; reopening in {delay:.1f} s (attempt {attempt})"
            )
            if self._stop.wait(delay):
                raise SourceEnded
            cap = self._opener()
            if cap is not None and cap.isOpened():
                self.reconnects += 1
                self._log(f"source {self.name} reopened")
                self._cap = cap
                self._thread = self._start()
                return
            delay = min(delay * 2, self._max_backoff)
        raise SourceEnded

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._cap.release()


class Prefetch:
    """Reads a file source ahead on a thread, in order and without dropping, so decoding the next
    frame overlaps the model's work on this one."""

    live = False
    _END = object()

    def __init__(self, source, depth: int = 4):
        self._source = source
        self.name = source.name
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    @property
    def reconnects(self) -> int:
        return self._source.reconnects

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._source.read()
                except SourceEnded:
                    item = self._END
                except Exception as exc:  # surfaced to the loop, not lost in a thread
                    item = exc
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if item is self._END or isinstance(item, Exception):
                    return
        finally:
            self._source.close()

    def read(self) -> Frame:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)
            raise SourceEnded
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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


@dataclass(frozen=True)
class SourceKind:
    name: str
    matches: Callable[[str], bool]
    make: Callable[[str, CaptureSettings], object]


SOURCES: list[SourceKind] = [
    SourceKind(
        "camera", str.isdigit, lambda s, c: LiveSource(f"camera {s}", _camera_opener(int(s), c))
    ),
    SourceKind(
        "gstreamer",
        lambda s: "!" in s,
        lambda s, c: LiveSource(
            "gstreamer pipeline", lambda: cv2.VideoCapture(s, cv2.CAP_GSTREAMER)
        ),
    ),
    SourceKind(
        "stream",
        lambda s: s.lower().startswith(URL_SCHEMES),
        lambda s, c: LiveSource(s, lambda: cv2.VideoCapture(s, cv2.CAP_FFMPEG)),
    ),
    SourceKind(
        "images",
        lambda s: (
            Path(s).is_dir()
            or any(ch in s for ch in "*?[")
            or (Path(s).is_file() and is_image_file(Path(s)))
        ),
        lambda s, c: Prefetch(ImageFolderSource(s)),
    ),
    SourceKind("video", lambda s: Path(s).is_file(), lambda s, c: Prefetch(FileSource(s))),
]


def open_source(spec: str, settings: CaptureSettings = CaptureSettings()):
    """The FrameSource for --source: the first kind in SOURCES that recognises it."""
    for kind in SOURCES:
        if kind.matches(spec):
            return kind.make(spec, settings)
    hint = " (a video file?)" if spec.lower().endswith(VIDEO_SUFFIXES) else ""
    raise EdgeclsError(
        f"--source {spec}: not found{hint}; give a camera index, a video file, an image "
        "folder or glob, an rtsp/http URL, or a GStreamer pipeline"
    )
