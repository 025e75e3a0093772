"""Sources that end: a video file and a folder (or glob) of images, read in order, and a
read-ahead thread in front of either."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import cv2

from edgecls.bundle.preprocess import Walker, iter_image_paths, read_image
from edgecls.errors import EdgeclsError
from edgecls.runtime.sources.base import Frame, Source, SourceEnded, prepared, valid_image


class FileSource(Source):
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

    def read(self) -> Frame:
        if self._pending:
            return self._pending.pop(0)
        gap = 0
        while gap < self.MAX_GAP:
            ok, image = self._cap.read()
            if ok:
                frames = [Frame(self._index + i, None) for i in range(gap)]
                frames.append(Frame(self._index + gap, image if valid_image(image) else None))
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


class ImageFolderSource(Source):
    """Images of a folder or a glob, in sorted order, one frame each; unreadable ones are corrupt
    frames, named. The folder is walked as frames are read (`iter_image_paths`), so the first
    frame comes at once, memory does not grow with the folder, and the walk ends on `stop` (set
    by the run's stop signal) or with a clear error past MAX_WALK_ENTRIES."""

    live = False

    def __init__(self, spec: str):
        self.name = spec
        self.stop = threading.Event()
        self.root = Path(spec) if Path(spec).is_dir() else None  # names relative to it
        self._paths = iter_image_paths(spec, Walker(stop=self.stop))
        self._index = 0

    def read(self) -> Frame:
        path = next(self._paths, None)
        if path is None:
            if self._index == 0 and not self.stop.is_set():
                raise EdgeclsError(
                    f"--source {self.name}: no images found (jpg, jpeg, png, bmp, webp)"
                )
            raise SourceEnded
        i, self._index = self._index, self._index + 1
        # the base name alone is ambiguous across sub-folders (ok/0001.jpg, def/0001.jpg)
        name = str(path.relative_to(self.root) if self.root else path)
        try:
            return Frame(i, cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR), name)
        except EdgeclsError as exc:
            return Frame(i, None, name, problem=str(exc))


class Prefetch(Source):
    """Reads a file source ahead on a thread, in order and without dropping, so decoding (and
    `prepare`) of the next frame overlaps the model's work on this one. Its `stop` is the
    wrapped source's own where it has one (a folder's walk ends on it); the run sets it on a
    stop signal, and a read waiting for a frame that a long walk has not found yet ends then
    too."""

    live = False
    _END = object()

    def __init__(self, source: Source, depth: int = 2):
        self._source = source
        self.name = source.name
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = source.stop if source.stop is not None else threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    # what the loop and a recording read of the source: the wrapped one's
    reconnects = property(lambda self: self._source.reconnects)
    fps = property(lambda self: self._source.fps)
    ended_early = property(lambda self: self._source.ended_early)

    def _fill(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    item = self._source.read()
                    item.prepared = prepared(self.prepare, item.image)
                except SourceEnded:
                    item = self._END
                except Exception as exc:  # surfaced to the loop, not lost in a thread
                    item = exc
                while not self.stop.is_set():
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
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self.stop.is_set():
                    raise SourceEnded from None
        if item is self._END:
            self._queue.put(item)
            raise SourceEnded
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
