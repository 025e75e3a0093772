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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecls.bundle.preprocess import image_paths, is_image_file, read_image
from edgecls.errors import EdgeclsError, SourceUnavailable
from edgecls.registry import Registry
from edgecls.runtime import native_memory

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
    name: str = ""  # an image folder's file, as the folder's path to it (sub/img.jpg)
    problem: str = ""  # why a named image could not be read


class SourceEnded(Exception):
    """A file source reached its end, or a live source could not be reopened."""


def _valid(image) -> bool:
    """A frame the preprocessing can take: colour or grey, 8 or 16 bit."""
    return (
        isinstance(image, np.ndarray)
        and image.size > 0
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))
    )


class FileSource:
    """A video file, read in order. Damaged frames in the middle are skipped and counted (the
    decoder picks up at the next good one); only a long run of failures is the end, and an end
    well before the container's frame count is reported."""

    live = False
    MAX_GAP = 50  # consecutive unreadable frames taken as the end of the file

    def __init__(self, path: str):
        self.name = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise EdgeclsError(
                f"--source {path}: cannot open this video (unknown codec or not a video)"
            )
        self.total = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._index = 0
        self._pending: list[Frame] = []
        self.reconnects = 0
        self.ended_early: str | None = None

    def read(self) -> Frame:
        if self._pending:
            return self._pending.pop(0)
        gap = 0
        while gap < self.MAX_GAP:
            ok, image = self._cap.read()
            if ok:
                frames = [Frame(self._index + i, None) for i in range(gap)]
                frames.append(Frame(self._index + gap, image if _valid(image) else None))
                self._index += gap + 1
                self._pending = frames[1:]
                return frames[0]
            gap += 1
            if self.total and self._index + gap >= self.total:
                break
        if self.total and self._index < self.total - 1:
            self.ended_early = (
                f"{self.name}: ended after {self._index} of {self.total} frames "
                "(truncated or damaged file)"
            )
        raise SourceEnded

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
        self.root = Path(spec) if Path(spec).is_dir() else None  # names relative to it
        self._iter: Iterator[tuple[int, Path]] = enumerate(self.paths)
        self.reconnects = 0
        self.fps = 0.0

    def read(self) -> Frame:
        try:
            i, path = next(self._iter)
        except StopIteration:
            raise SourceEnded from None
        # the base name alone is ambiguous across sub-folders (ok/0001.jpg, def/0001.jpg)
        name = str(path.relative_to(self.root) if self.root else path)
        try:
            return Frame(i, cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR), name)
        except EdgeclsError as exc:
            return Frame(i, None, name, problem=str(exc))

    def close(self) -> None:
        pass


class LiveSource:
    """A camera, stream or pipeline: newest frame only, reopened with back-off when it drops or
    stalls.

    Ownership: each capture object belongs to the one worker thread that opened it; only that
    thread reads or releases it. A stalled worker (stuck inside `read()` on a silent socket) is
    abandoned, not touched: a new worker opens a new capture, and the old one releases its own
    when its read returns. Every wait wakes on the stop event, so a signal ends the loop within
    a fraction of a second even while the source is down.
    """

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
        stop: threading.Event | None = None,
    ):
        self.name = name
        self._opener = opener
        self._timeout = frame_timeout
        self._max_backoff = max_backoff
        self._max_reconnects = max_reconnects
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stop = stop or threading.Event()
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._seq = self._taken = 0
        self._generation = 0
        self._reading = False  # the current worker holds an open capture
        self._gave_up = False
        self._workers: list[threading.Thread] = []
        self.reconnects = 0
        self.dropped_frames = 0  # frames replaced before the model saw them
        self.last_frame = time.monotonic()
        cap = opener()  # the first open in the caller's thread: a wrong source fails at start
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceUnavailable(
                f"--source {self.name}: cannot open (no such camera, stream or "
                "pipeline; check the index/URL and that nothing else holds it)"
            )
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if hasattr(cap, "get") else 0.0
        self._spawn(cap)

    def _spawn(self, cap=None, reason: str = "") -> None:
        with self._cond:
            self._generation += 1
            self._reading = cap is not None
            args = (self._generation, cap, reason)
        thread = threading.Thread(target=self._worker, args=args, daemon=True, name=self.name)
        self._workers = [t for t in self._workers if t.is_alive()] + [thread]
        thread.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self.stop.is_set()

    def _worker(self, generation: int, cap, reason: str) -> None:
        """Open (with back-off), read until the capture fails, release it, and again."""
        while self._current(generation):
            if cap is None:
                cap = self._reopen(generation, reason)
                if cap is None:
                    return
            try:
                self._read_all(generation, cap)
            finally:
                cap.release()  # this thread's own capture, never another's
                native_memory.return_freed()  # FFmpeg's buffers, back to the system
            cap, reason = None, "stopped delivering frames"

    def _read_all(self, generation: int, cap) -> None:
        while self._current(generation):
            ok, image = cap.read()
            with self._cond:
                if generation != self._generation:
                    return  # abandoned after a stall: a newer worker owns the source
                if not ok:
                    self._reading = False
                    self._cond.notify_all()
                    return
                if self._seq > self._taken:
                    self.dropped_frames += 1
                self._latest, self._seq = image, self._seq + 1
                self.last_frame = time.monotonic()
                self._cond.notify_all()

    def _reopen(self, generation: int, reason: str):
        delay, attempt = 0.5, 0
        while self._current(generation):
            attempt += 1
            if self._max_reconnects is not None and attempt > self._max_reconnects + 1:
                with self._cond:
                    self._gave_up = True
                    self._cond.notify_all()
                return None
            self._log(
                f"source {self.name} {reason}; reopening in {delay:.1f} s (attempt {attempt})"
            )
            if self.stop.wait(delay):
                return None
            cap = self._opener()
            if cap is not None and cap.isOpened():
                with self._cond:
                    if generation != self._generation:
                        cap.release()
                        return None
                    self._reading = True
                    self.reconnects += 1
                    self.last_frame = time.monotonic()
                self._log(f"source {self.name} reopened")
                return cap
            if cap is not None:
                cap.release()
            delay = min(delay * 2, self._max_backoff)
        return None

    def read(self) -> Frame:
        """The newest frame; waits (waking on stop) while the source is down or reconnecting, and
        hands a stalled source to a new worker."""
        while True:
            with self._cond:
                if self.stop.is_set() or self._gave_up:
                    raise SourceEnded
                if self._seq > self._taken:
                    self._taken = self._seq
                    image = self._latest
                    return Frame(self._seq - 1, image if _valid(image) else None)
                stalled = self._reading and time.monotonic() - self.last_frame > self._timeout
                if not stalled:
                    self._cond.wait(timeout=0.1)
                    continue
            self._spawn(None, f"no frame for {self._timeout:.0f} s")

    def close(self, timeout: float = 2.0) -> None:
        """Stop every worker and give each the time to finish its read and release its own
        capture (a healthy stream answers within a frame; a stalled one within the stream
        timeout, or the process ends without it)."""
        self.stop.set()
        with self._cond:
            self._generation += 1  # every worker sees it is no longer current
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))


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

    def __getattr__(self, name: str):  # reconnects, fps, ended_early: the wrapped source's
        return getattr(self._source, name)

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


# How long a stream may take to open or to deliver the next frame before OpenCV's FFmpeg backend
# gives up (so a silent socket ends a read instead of blocking a thread for good).
STREAM_TIMEOUT_MS = 5000


def _stream_opener(url: str):
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    return lambda: cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _gstreamer(spec: str, settings: CaptureSettings, stop) -> LiveSource:
    from edgecls.runtime.cameras import check_gstreamer

    check_gstreamer(spec)
    opener = lambda: cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)  # noqa: E731
    return LiveSource("gstreamer pipeline", opener, stop=stop)


def _picamera2(spec: str, settings: CaptureSettings, stop) -> LiveSource:
    from edgecls.runtime.cameras import make_picamera2_source

    return make_picamera2_source(spec, settings, stop=stop)


def _is_picamera2(spec: str) -> bool:
    from edgecls.runtime.cameras import matches_picamera2

    return matches_picamera2(spec)


def _is_images(spec: str) -> bool:
    path = Path(spec)
    return (
        path.is_dir() or any(ch in spec for ch in "*?[") or (path.is_file() and is_image_file(path))
    )


@dataclass(frozen=True)
class SourceKind:
    matches: Callable[[str], bool]
    make: Callable[[str, CaptureSettings, threading.Event | None], object]


SOURCES: Registry[SourceKind] = Registry("source kind")
SOURCES.add(
    "camera",
    SourceKind(
        # a folder or file named 2024 is that folder or file, not camera 2024
        lambda s: s.isdigit() and not Path(s).exists(),
        lambda s, c, stop: LiveSource(f"camera {s}", _camera_opener(int(s), c), stop=stop),
    ),
)
SOURCES.add("picamera2", SourceKind(_is_picamera2, _picamera2))
SOURCES.add("gstreamer", SourceKind(lambda s: "!" in s, _gstreamer))
SOURCES.add(
    "stream",
    SourceKind(
        lambda s: s.lower().startswith(URL_SCHEMES),
        lambda s, c, stop: LiveSource(s, _stream_opener(s), stop=stop),
    ),
)
SOURCES.add("images", SourceKind(_is_images, lambda s, c, stop: Prefetch(ImageFolderSource(s))))
SOURCES.add(
    "video", SourceKind(lambda s: Path(s).is_file(), lambda s, c, stop: Prefetch(FileSource(s)))
)


def open_source(
    spec: str, settings: CaptureSettings = CaptureSettings(), stop: threading.Event | None = None
):
    """The FrameSource for --source: the first kind in SOURCES that recognises it. A live
    source's waits wake on `stop` (the loop's signal event)."""
    for kind in SOURCES.values():
        if kind.matches(spec):
            return kind.make(spec, settings, stop)
    hint = " (a video file?)" if spec.lower().endswith(VIDEO_SUFFIXES) else ""
    raise EdgeclsError(
        f"--source {spec}: not found{hint}; give a camera index, a video file, an image "
        "folder or glob, an rtsp/http URL, picamera2[:N], or a GStreamer pipeline"
    )
