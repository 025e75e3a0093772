"""`--record`: an annotated video at the source's real frame rate (a file's own rate, divided by
--every; a live source's measured rate), written so that what reached the disk plays after a
power cut, a kill or a full disk, and never over an existing file.

OpenCV, the one video library every board install has, cannot write a fragmented MP4 (its FFmpeg
writer takes no muxer flags), and an MP4 plays only once its index is written at its end: one
long MP4 cut off by a power cut or a full disk plays nowhere. So:

- `.avi` is Motion JPEG: every frame is a JPEG chunk of its own, and a file cut off anywhere (no
  index, header sizes never written) plays up to its last whole frame in FFmpeg-based players
  (OpenCV, VLC, mpv, ffplay). Nothing written is lost; the file is about 5x larger. The choice
  for a service.
- `.mp4`, `.m4v`, `.mov`, `.mkv` are MPEG-4 in parts of MP4_PART_SECONDS, each finished in turn
  (`NAME.mp4`, `NAME.001.mp4`, `NAME.002.mp4`, …): a cut loses the part being written, never
  the ones before. A run shorter than a part is the one file asked for.

Any part also ends at PART_BYTES. The recording stops, finished, while the disk still has
DISK_RESERVE_BYTES; every finished part is opened again to check that it plays, and a warning
names what does not. A name that exists (the last run's recording, anyone's video) is never
written over: the run records to `NAME-2.mp4` (then -3, …), named in its start line.
"""

from __future__ import annotations

import glob
import os
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
MP4_PART_SECONDS = 60.0  # what a power cut may cost an MP4 recording
PART_BYTES = 1 << 30  # files past 1 GB need OpenDML (AVI) or 64-bit offsets: a new part first
MEASURE_FRAMES, MEASURE_SECONDS = 60, 2.0
CHECK_SECONDS = 1.0  # how often the room left is looked at


def free_name(path: Path) -> Path:
    """`path`, or `NAME-2.ext`, `NAME-3.ext`, …: the first that no file has, nor any part of an
    earlier recording under that name."""
    candidate, n = path, 1
    while os.path.lexists(candidate) or any(
        candidate.parent.glob(f"{glob.escape(candidate.stem)}.[0-9][0-9][0-9]{candidate.suffix}")
    ):
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def part_name(base: Path, index: int) -> Path:
    return base if index == 0 else base.with_name(f"{base.stem}.{index:03d}{base.suffix}")


def plays(path: Path) -> bool:
    """Whether a player opens the file and decodes its first frame."""
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


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
        self.base = self.current = self.path  # the name recorded to, and the part being written
        self.part, self.in_part, self.part_frames = 0, 0, None
        self.finished: list[Path] = []  # parts closed and checked to play
        self.size: tuple[int, int] = (0, 0)
        self.fps = 0.0

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
        if self.writer is not None and abs(event.time - self.checked_at) >= CHECK_SECONDS:
            self.checked_at = event.time
            self._finish_if_the_disk_fills()

    def _finish_if_the_disk_fills(self) -> None:
        """Stop while the disk still has DISK_RESERVE_BYTES (the board needs room too, and an MP4
        its index), or say what plays when it filled at once (OpenCV's writer reports nothing);
        start a new part when this one is PART_BYTES."""
        free = shutil.disk_usage(self.current.parent).free
        if free >= DISK_RESERVE_BYTES:
            if self._size() >= PART_BYTES:
                self._next_part()
            return
        self._stop(free, self._finish_part())

    def _stop(self, free: int, finished: bool) -> None:
        """The recording ends here (the disk is full, or a part would not play): one warning that
        says what plays."""
        self.broken = True
        self.context.summary.add_error(self.name)
        if finished:
            what = f"the recording was finished at {self.written} frames so that it stays playable"
            what += "" if free else ", up to the last frame that fit"
        else:
            what = f"the recording stopped at {self.written} frames, and this part does not play"
            what += self._earlier()
        self.context.log(
            f"warning: --record {self.current}: the disk has {free >> 20} MB left; {what} "
            "(free space, or record elsewhere)"
        )

    def _size(self) -> int:
        try:
            return self.current.stat().st_size
        except OSError:
            return 0

    def _earlier(self) -> str:
        if not self.finished:
            return ""
        names = self.finished[0].name + (f" to {self.finished[-1].name}" * (len(self.finished) > 1))
        return f"; the {len(self.finished)} part(s) before it do ({names})"

    def _measured_rate(self, record: Record) -> float | None:
        self.pending.append(record)
        span = self.pending[-1].time - self.pending[0].time
        if len(self.pending) < MEASURE_FRAMES and span < MEASURE_SECONDS:
            return None
        self.pending.pop()  # written below, after the others
        return max(1.0, (len(self.pending)) / span) if span > 0 else 15.0

    def _start(self, record: Record, fps: float) -> None:
        h, w = record.image.shape[:2]
        self.size, self.fps = (w, h), float(fps)
        self.base = free_name(self.path)
        seconds = None if self.path.suffix.lower() == ".avi" else MP4_PART_SECONDS
        self.part_frames = max(1, round(fps * seconds)) if seconds else None
        self._open_part(0)
        taken = f" ({self.path.name} exists)" if self.base != self.path else ""
        how = (
            "Motion JPEG: plays to its last frame after a power cut"
            if seconds is None
            else f"in parts of {seconds:g} s ({self.base.name}, {part_name(self.base, 1).name}, "
            "...), each playable once finished"
        )
        self.context.log(f"record: {self.base}{taken} at {fps:.2f} FPS; {how}")

    def _open_part(self, index: int) -> None:
        path = part_name(self.base, index)
        while os.path.lexists(path):  # someone's file: never written over
            index += 1
            path = part_name(self.base, index)
        fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(path), fourcc, self.fps, self.size)
        if not writer.isOpened():
            self.broken = True
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()  # the empty file this open made (the name was free)
            raise RuntimeError(f"OpenCV cannot write {path} (codec, path or a full disk)")
        self.writer, self.current, self.part, self.in_part = writer, path, index, 0

    def _finish_part(self) -> bool:
        """Close the part being written; True when it plays."""
        self.writer.release()
        self.writer = None
        ok = plays(self.current)
        if ok:
            self.finished.append(self.current)
        return ok

    def _next_part(self) -> None:
        finished = self._finish_part()
        if finished:
            try:
                self._open_part(self.part + 1)
                return
            except RuntimeError:  # no room for another part
                pass
        self._stop(shutil.disk_usage(self.current.parent).free, finished)

    def _write(self, record: Record) -> None:
        if self.part_frames is not None and self.in_part >= self.part_frames:
            self._next_part()
        if self.writer is None:  # stopped
            return
        summary = self.context.summary
        image = draw(record, self.context.triggers, summary.fps(), summary.drift,
                     shadow=summary.shadow)  # fmt: skip
        self.writer.write(image)
        self.written += 1
        self.in_part += 1

    def close(self) -> None:
        if self.writer is None and self.pending:  # a short live run: use what was measured
            first = self.pending.pop(0)
            span = (self.pending[-1].time - first.time) if self.pending else 0
            self._start(first, max(1.0, len(self.pending) / span) if span > 0 else 15.0)
            for record in [first, *self.pending]:
                self._write(record)
            self.pending.clear()
        if self.writer is not None and not self._finish_part():
            self.context.summary.add_error(self.name)
            self.context.log(
                f"warning: --record {self.current}: the video does not play ({self._size()} "
                f"bytes written: disk full?){self._earlier()}"
            )


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
