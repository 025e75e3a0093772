"""`--record`: an annotated video at the source's real frame rate (a file's own rate, divided by
--every; a live source's measured rate), finalised on every way out so it stays playable."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2

from edgecls.durable import check_writable_folder
from edgecls.errors import EdgeclsError
from edgecls.runtime.records import Record
from edgecls.runtime.sinks import DISK_RESERVE_BYTES, SINKS, Sink, SinkContext
from edgecls.runtime.sinks.overlay import draw
from edgecls.runtime.sources import Source

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
MEASURE_FRAMES, MEASURE_SECONDS = 60, 2.0
CHECK_SECONDS = 1.0  # how often the room left is looked at


class RecordingSink(Sink):
    name = "record"
    needs = frozenset({"image"})

    def __init__(self, config):
        self.path = Path(config.record)
        self.every = config.every
        self.writer = None
        self.broken = False
        self.pending: list[Record] = []  # a live source's first frames, while its rate is measured
        self.fps_fixed: float | None = None
        self.written = 0
        self.checked_at = float("-inf")  # record time of the last look at the room left

    def open(self, context: SinkContext) -> None:
        if self.path.suffix.lower() not in FOURCC:
            raise EdgeclsError(f"--record {self.path}: use one of {', '.join(FOURCC)}")
        if self.path.is_dir():
            raise EdgeclsError(f"--record {self.path}: is a folder; give a file name")
        check_writable_folder(self.path.parent, "--record")
        self.context = context

    def handle(self, event) -> None:
        if not isinstance(event, Record) or event.image is None or self.broken:
            if self.broken and isinstance(event, Record):
                self.context.summary.add_error(self.name)
            return
        if self.writer is None:
            if self.fps_fixed is None and not self.pending:  # the source is open by now
                fps = self.context.source_fps()
                self.fps_fixed = fps / self.every if fps and fps > 0 else None
            fps = self.fps_fixed or self._measured_rate(event)
            if fps is None:
                return
            self._start(event, fps)
        for record in [*self.pending, event] if self.pending else [event]:
            self._write(record)
        self.pending.clear()
        if abs(event.time - self.checked_at) >= CHECK_SECONDS:
            self.checked_at = event.time
            self._finish_if_the_disk_fills()

    def _finish_if_the_disk_fills(self) -> None:
        """An MP4 plays only once its index is written at the end: the recording is finished
        while the disk still has DISK_RESERVE_BYTES, rather than cut off by a full disk (which
        OpenCV's writer does not report) into a file no player opens."""
        free = shutil.disk_usage(self.path.parent).free
        if free >= DISK_RESERVE_BYTES:
            return
        self.writer.release()  # finished and playable, with what it holds
        self.writer, self.broken = None, True
        self.context.summary.add_error(self.name)
        self.context.log(
            f"warning: --record {self.path}: the disk has {free >> 20} MB left; the recording "
            f"was finished at {self.written} frames so that it stays playable (free space, or "
            "record elsewhere)"
        )

    def _measured_rate(self, record: Record) -> float | None:
        self.pending.append(record)
        span = self.pending[-1].time - self.pending[0].time
        if len(self.pending) < MEASURE_FRAMES and span < MEASURE_SECONDS:
            return None
        self.pending.pop()  # written below, after the others
        return max(1.0, (len(self.pending)) / span) if span > 0 else 15.0

    def _start(self, record: Record, fps: float) -> None:
        h, w = record.image.shape[:2]
        fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
        self.writer = cv2.VideoWriter(str(self.path), fourcc, float(fps), (w, h))
        if not self.writer.isOpened():
            self.broken = True
            raise RuntimeError(f"OpenCV cannot write {self.path} (codec or path)")
        self.context.log(f"record: {self.path} at {fps:.2f} FPS")

    def _write(self, record: Record) -> None:
        fps = self.context.summary.fps()
        self.writer.write(draw(record, self.context.triggers, fps, self.context.summary.drift))
        self.written += 1

    def close(self) -> None:
        if self.writer is None and self.pending:  # a short live run: use what was measured
            first = self.pending.pop(0)
            span = (self.pending[-1].time - first.time) if self.pending else 0
            self._start(first, max(1.0, len(self.pending) / span) if span > 0 else 15.0)
            for record in [first, *self.pending]:
                self._write(record)
            self.pending.clear()
        if self.writer is not None:
            self.writer.release()
            size = self.path.stat().st_size if self.path.exists() else 0
            if self.written and size == 0:
                self.context.summary.add_error(self.name)
                self.context.log(f"warning: --record {self.path}: nothing was written (disk full?)")


def source_fps(source: Source, spec: str) -> float | None:
    """A file's own frame rate (the source's `fps`, or the video header); None for a live source,
    whose delivered rate the recording measures (cameras announce rates they do not keep)."""
    if source.live:
        return None
    if source.fps:
        return float(source.fps)
    if not Path(spec).is_file():
        return None
    cap = cv2.VideoCapture(spec)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0 < fps < 1000 else None


@SINKS.register("record")
def make(config):
    return RecordingSink(config) if config.record else None
