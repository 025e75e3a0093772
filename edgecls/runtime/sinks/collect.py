"""Collection (`--collect DIR`): frames worth a person's look, kept with a sidecar for labelling
on the board's /label page and for `edgecls data pull`.

The rules (collection/rules.py) run on the loop's side in `wants`, so a frame that is not kept
costs no copy and no queue slot; a kept one is encoded and written on this sink's thread. Collection
is never why the loop stops: a folder that cannot be written at start, a disk that fills or turns
read-only while running is one warning, and every frame it would have kept is counted as dropped.
The queue holds at most --collect-max-mb; beyond it the oldest frames nobody labelled yet go
first. Labelled frames are a person's work and are never deleted.
"""

from __future__ import annotations

import shutil
from collections import deque
from datetime import datetime, timezone

import cv2

from edgecls.durable import check_writable_folder
from edgecls.errors import EdgeclsError
from edgecls.runtime.collection.rules import CollectConfig, CollectRules
from edgecls.runtime.collection.store import CollectStore
from edgecls.runtime.loop import crop
from edgecls.runtime.records import Record
from edgecls.runtime.sinks import DISK_RESERVE_BYTES, SINKS, Sink, SinkContext

JPEG_QUALITY = 95  # these frames become training data: little loss


def collected_name(record: Record) -> str:
    stamp = datetime.fromtimestamp(record.time, tz=timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"c-{stamp}-f{record.frame:08d}.jpg"


class CollectSink(Sink):
    name = "collect"
    needs = frozenset({"image"})

    def __init__(self, config: CollectConfig):
        self.config = config
        self.quota = int(config.max_mb * 1024 * 1024)
        self.pending: deque[tuple[int, tuple[str, ...]]] = deque()  # (frame, reasons) to write
        self.queued: deque[tuple[str, int]] = deque()  # our queued frames, oldest first
        self.total = 0
        self.disabled = False  # the folder cannot be written: frames are counted, not kept
        self.short = False  # the disk is below the reserve

    def open(self, context: SinkContext) -> None:
        """The store is the run's (context.collect), so the labelling page serves it too."""
        self.context = context
        self.store = context.collect = CollectStore(self.config.folder, context.identity.labels)
        self.rules = CollectRules(self.config, self.store.classes)
        try:
            check_writable_folder(self.store.folder, "--collect")
            self.store.create()
            for path, size in self.store.queued():
                self._keep(path.name, size)
        except (EdgeclsError, OSError) as exc:
            self.disabled = True
            context.log(
                f"warning: {exc}; no frames are collected in this run (each is counted as "
                "dropped), the loop goes on"
            )

    def wants(self, event) -> bool:
        """The rules, on the loop's thread: only a kept frame is copied and queued."""
        if not isinstance(event, Record) or event.image is None or event.kind != "frame":
            return False
        drifting = self.context.summary.drift.get("state") == "drift"
        reasons = self.rules.reasons(event, drifting)
        if not reasons:
            return False
        if self.disabled or not self.rules.admit(event.time):
            self.context.summary.add_dropped(self.name)
            return False
        self.rules.kept(event, reasons)
        self.pending.append((event.frame, reasons))
        return True

    def handle(self, event) -> None:
        reasons = self._reasons_of(event.frame)
        if reasons is None:
            return
        if self._short_of_room():
            self.context.summary.add_dropped(self.name)
            return
        roi = event.identity.roi
        image = crop(event.image, roi)
        jpeg = _jpeg(image)
        full = _jpeg(event.image) if roi is not None else None
        sidecar = {
            "reasons": list(reasons),
            "record": event.to_dict(),
            "bundle": event.identity.to_dict(),
            "roi": list(roi) if roi else None,
            "size": [int(image.shape[1]), int(image.shape[0])],
        }
        name = self.store.free_name(collected_name(event))
        self._keep(name, self.store.add(name, jpeg, sidecar, full))
        self.context.summary.collected += 1
        self._prune()

    def _reasons_of(self, frame: int) -> tuple[str, ...] | None:
        """The reasons `wants` gave this frame; older entries were dropped by a full queue."""
        while self.pending:
            number, reasons = self.pending.popleft()
            if number == frame:
                return reasons
        return None

    def _short_of_room(self) -> bool:
        free = shutil.disk_usage(self.store.folder).free
        short = free < DISK_RESERVE_BYTES + (16 << 20 if self.short else 0)
        if short != self.short:
            self.short = short
            self.context.log(
                f"warning: --collect {self.store.folder}: the disk has {free >> 20} MB left; "
                "frames are not collected (each is counted) until it has more room"
                if short
                else f"--collect {self.store.folder}: {free >> 20} MB free again; collecting"
            )
        return short

    def _keep(self, name: str, size: int) -> None:
        self.queued.append((name, size))
        self.total += size

    def _prune(self) -> None:
        """Oldest first; the frame just written stays whatever its size; a frame a person
        labelled meanwhile only leaves the count."""
        while self.total > self.quota and len(self.queued) > 1:
            name, size = self.queued.popleft()
            self.total -= size
            self.store.remove_queued(name)


def _jpeg(image) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


@SINKS.register("collect")
def make(config):
    return CollectSink(config.collect) if config.collect else None
