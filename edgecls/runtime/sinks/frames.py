"""Saved frames (`--save-dir`, `--save-labels`, `--save-max-mb`).

Names carry the UTC time to the microsecond, the frame index, the label made safe for file names
and the confidence (`edgecls-20260101T120000.123456Z-f00000042-def-0.97.jpg`), so a restart never
overwrites the frames of the last run. Each frame is written to a temp file and renamed, so a full
disk leaves no half JPEG; and saving pauses, counted, while the disk has less than 64 MB left, so
saved frames never take the last room the board needs. The quota deletes the oldest frames
first, and only files with this exact name pattern: nothing edgecls did not write is deleted.
An anomaly bundle's frames are saved with the anomaly map beside them (`saved_image`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edgecls.durable import check_writable_folder
from edgecls.runtime.records import Record
from edgecls.runtime.sinks import DISK_RESERVE_BYTES, SINKS, Sink, SinkContext
from edgecls.runtime.sinks.overlay import heat_overlay

# after a pause, saving resumes once the disk has this much more than the reserve
RESUME_BYTES = 16 << 20
OURS = re.compile(r"^edgecls-\d{8}T\d{6}\.\d{6}Z-f\d+-[A-Za-z0-9._-]+-\d\.\d{2}(-\d+)?\.jpg$")


def safe_label(label: str) -> str:
    """A label as a file-name part: `def/crack` -> `def_crack`; never empty, never `..`."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[:60]
    return safe or "label"


def frame_name(record: Record) -> str:
    stamp = datetime.fromtimestamp(record.time, tz=timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    label = safe_label(record.label or "uncertain")
    return f"edgecls-{stamp}-f{record.frame:08d}-{label}-{min(record.confidence, 1.0):.2f}.jpg"


def saved_image(record: Record) -> np.ndarray:
    """The frame as the camera gave it; an anomaly bundle's with the same frame and its anomaly
    map beside it (the left half stays untouched, to label or retrain on)."""
    if record.anomaly_map is None:
        return record.image
    marked = record.image.copy()
    heat_overlay(marked, record.anomaly_map, record.identity.roi)
    return np.hstack([record.image, marked])


class FramesSink(Sink):
    name = "frames"
    needs = frozenset({"image"})

    def __init__(self, config):
        self.folder = Path(config.save_dir)
        self.labels = frozenset(config.save_labels)
        self.quota = int(config.save_max_mb * 1024 * 1024) if config.save_max_mb else None
        self.kept: deque[tuple[Path, int]] = deque()  # our files, oldest first
        self.total = 0
        self.over_quota_said = False
        self.short = False  # the disk is below the reserve: frames are counted, not saved
        self.last_size = 0  # the last JPEG's size, what the next will about need (the first: 0)

    def open(self, context: SinkContext) -> None:
        self.context = context
        check_writable_folder(self.folder, "--save-dir")
        if self.quota is not None:
            for p in sorted(p for p in self.folder.iterdir() if OURS.match(p.name)):
                self._keep(p, p.stat().st_size)
            self._prune()

    def wants(self, event) -> bool:
        return (
            isinstance(event, Record)
            and event.image is not None
            and event.label is not None
            and (not self.labels or event.label in self.labels)
        )

    def handle(self, event) -> None:
        if not self.wants(event):
            return
        if self._short_of_room(self.last_size):  # before the JPEG: a pause costs no encoding
            self.context.summary.add_dropped(self.name)
            return
        ok, buf = cv2.imencode(".jpg", saved_image(event), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError("OpenCV could not encode the frame as JPEG")
        self.last_size = len(buf)
        path = self._free_name(frame_name(event))
        self._write(path, buf.tobytes())
        self.context.summary.saved += 1
        if self.quota is not None:
            self._keep(path, len(buf))
            if len(buf) > self.quota and not self.over_quota_said:
                self.over_quota_said = True
                self.context.log(
                    f"warning: --save-max-mb {self.quota / 2**20:g}: one frame ({len(buf)} bytes) "
                    "is larger than the quota; only the newest frame is kept"
                )
            self._prune(keep=1)

    def _short_of_room(self, size: int) -> bool:
        """True while saving a frame of `size` would leave the disk below the reserve, counting
        what the quota's pruning of older frames then frees (a folder at its quota on a full card
        rotates on). Saving resumes only RESUME_BYTES above the reserve, so free space hovering
        at it does not flip the state every few frames; each change is said once."""
        free = shutil.disk_usage(self.folder).free + self._pruned_by(size) - size
        short = free < DISK_RESERVE_BYTES + (RESUME_BYTES if self.short else 0)
        if short != self.short:
            self.short = short
            self.context.log(
                f"warning: --save-dir {self.folder}: the disk has {max(free, 0) >> 20} MB left; "
                f"frames are not saved (each is counted) until it has "
                f"{(DISK_RESERVE_BYTES + RESUME_BYTES) >> 20} MB (free space, or set or lower "
                "--save-max-mb)"
                if short
                else f"--save-dir {self.folder}: {free >> 20} MB free again; saving frames"
            )
        return short

    def _pruned_by(self, size: int) -> int:
        """The bytes the quota would delete once a frame of `size` is saved (the oldest first)."""
        if self.quota is None:
            return 0
        total, freed = self.total + size, 0
        for _, old in self.kept:
            if total <= self.quota:
                break
            total, freed = total - old, freed + old
        return freed

    def _free_name(self, name: str) -> Path:
        path, n = self.folder / name, 1
        while path.exists():
            path = self.folder / f"{name[:-4]}-{n}.jpg"
            n += 1
        return path

    def _write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".edgecls-tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # a power cut after the rename: a whole JPEG, not 0 bytes
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _keep(self, path: Path, size: int) -> None:
        self.kept.append((path, size))
        self.total += size

    def _prune(self, keep: int = 0) -> None:
        """The oldest go first; `keep` newest stay whatever their size (the frame just saved: a
        quota below one frame would otherwise delete every frame as soon as it is written)."""
        while self.total > self.quota and len(self.kept) > keep:
            path, size = self.kept.popleft()
            path.unlink(missing_ok=True)
            self.total -= size


@SINKS.register("frames")
def make(config):
    return FramesSink(config) if config.save_dir else None
