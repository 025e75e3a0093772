"""Cameras, streams and pipelines: read on a capture thread that keeps only the newest frame, so a
slow model never works through a stale backlog, and reopened with back-off when they drop."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from edgecls.errors import SourceUnavailable
from edgecls.runtime import native_memory
from edgecls.runtime.sources.base import Frame, Source, SourceEnded, prepared, valid_image


class _Unopened:
    """What an opener that returned None stands for: a capture that is not open."""

    def isOpened(self) -> bool:  # OpenCV's name
        return False

    def release(self) -> None:
        pass


class LiveSource(Source):
    """A camera, stream or pipeline: newest frame only, reopened with back-off when it drops or
    stalls.

    Ownership: each capture object belongs to the one worker thread that opened it; only that
    thread reads or releases it. A stalled worker (stuck inside `read()` on a silent socket) is
    abandoned, not touched: a new worker opens a new capture, and the old one releases its own
    when its read returns. Every wait wakes on the stop event, so a signal ends the loop within
    a fraction of a second even while the source is down.
    """

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
        self._ready = None  # its `prepared`
        self._latest_at = 0.0  # when the capture thread grabbed it
        self._seq = self._taken = 0
        self._generation = 0
        self._reading = False  # the current worker holds an open capture
        self._gave_up = False
        self._workers: list[threading.Thread] = []
        self.reconnects = 0
        self.dropped_frames = 0  # frames replaced before the model saw them
        self.last_frame = time.monotonic()
        cap = self._first_open()
        if cap is None:  # a stop signal came first: read() ends the run, a clean stop
            self._log(f"source {self.name}: stopped while opening")
            return
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailable(
                f"--source {self.name}: cannot open (no such camera, stream or "
                "pipeline; check the index/URL and that nothing else holds it)"
            )
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if hasattr(cap, "get") else 0.0
        self._spawn(cap)

    def _first_open(self):
        """The first open (a wrong source fails at start), on a helper thread the caller waits
        for, waking on the stop event: opening a silent stream blocks inside FFmpeg, where no
        signal handler runs. None when the stop came first; the helper then releases what it
        opened itself, as every thread here does."""
        done, box, lock = threading.Event(), {}, threading.Lock()

        def open_it():
            try:
                cap = self._opener()
            except BaseException as exc:  # handed to the caller, raised there
                cap, box["error"] = None, exc
            with lock:
                if box.get("abandoned"):
                    if cap is not None:
                        cap.release()
                else:
                    box["cap"] = cap
                    done.set()

        # not joined at close: an abandoned open ends with its own timeout, or with the process
        threading.Thread(target=open_it, daemon=True, name=f"{self.name} open").start()
        try:
            while not (done.wait(0.1) or self.stop.is_set()):
                pass
        finally:  # also on an exception in this thread: the helper keeps nothing it opens
            with lock:
                box["abandoned"] = not done.is_set()
        if box["abandoned"]:
            return None
        if "error" in box:
            raise box["error"]
        cap = box["cap"]
        return _Unopened() if cap is None else cap

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
            ready = prepared(self.prepare, image) if ok else None  # outside the lock
            with self._cond:
                if generation != self._generation:
                    return  # abandoned after a stall: a newer worker owns the source
                if not ok:
                    self._reading = False
                    self._cond.notify_all()
                    return
                if self._seq > self._taken:
                    self.dropped_frames += 1
                self._latest, self._ready, self._seq = image, ready, self._seq + 1
                self.last_frame = self._latest_at = time.monotonic()
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
                    image = image if valid_image(image) else None
                    return Frame(
                        self._seq - 1, image, captured=self._latest_at, prepared=self._ready
                    )
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
