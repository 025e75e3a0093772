"""Where records and decisions go: one small interface, one registry, a thread per slow sink.

A sink is opened before the first frame (where it can fail loudly: a read-only folder, an
unreachable option), then consumes events on its own thread from a bounded queue, so a slow
broker or disk never slows the loop. A full queue drops the event and counts it; a sink that
fails while running is reported once and counted, and the loop goes on. A sink whose work is
tens of microseconds of memory and arithmetic, never I/O, may say `inline`: the loop hands it
events itself, as a thread would cost more than that work (a wake-up and a hand-off of the
interpreter lock per event, on the core the loop needs).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgecls.registry import Registry
from edgecls.runtime.records import Event, Identity, Record, Summary

if TYPE_CHECKING:
    from edgecls.runtime.collection.store import CollectStore
    from edgecls.runtime.loop_options import LoopConfig
    from edgecls.runtime.models.manager import ModelManager
    from edgecls.runtime.parts import Station


@dataclass
class SinkContext:
    """What every sink may read: the run's counters, the stop event, the log, the model."""

    summary: Summary
    stop: threading.Event
    log: Callable[[str], None]
    identity: Identity
    triggers: frozenset[str] = frozenset()
    source_fps: Callable[[], float | None] = lambda: None
    out: object = None  # where --json records go when not to a file (stdout)
    live: bool = True  # live source: a full queue drops; file source: the loop waits instead
    station: Station | None = None  # with --part-trigger: where a server's trigger goes
    collect: CollectStore | None = None  # with --collect: the folder the labelling page serves
    models: ModelManager | None = None  # with model swaps: where POST /deploy and MQTT go


class Sink:
    """One output of the run. Only `name` and `handle` are required; the other members have the
    defaults of a sink that takes every event, one at a time, on a thread of its own."""

    name: str  # the output's name in logs, the summary and /metrics
    needs: frozenset[str] = frozenset()
    """The Record arrays it reads ("image", "model_input"); the others are left out of its copy,
    so a queued record does not hold frames nobody reads."""

    rate: float | None = None
    """Records a second it takes at most (None: all), sampled on the loop's side before any
    copy or queueing, so a fast loop does not hand over frames nobody uses; decisions always
    pass. Read at each record, so a sink may change it as it runs (the drift monitor takes all
    until its window is full)."""

    linger: float = 0.0
    """Seconds to let events gather before handling them, so a batch costs one wake-up (and
    one network write) instead of one per event; a decision or a half-full queue ends the wait
    at once."""

    inline: bool = False
    """True where handle() is quick and never blocks (no I/O, no lock held long by another
    thread): it then runs on the loop's thread, with no queue and no thread of its own, as a
    thread's wake-up and hand-off of the interpreter lock per event would cost more than the
    work."""

    def wants(self, event: Event) -> bool:
        """Whether to queue `event` at all (e.g. only --save-labels frames), checked on the loop's
        side so what the sink would ignore costs no copy and no queue slot; called only where a
        sink overrides it."""
        return True

    def open(self, context: SinkContext) -> None:
        """Check and acquire what the sink needs; raise EdgeclsError if it can never work."""

    def handle(self, event: Event) -> None:
        """Consume one event, on the sink's own thread (an inline sink's: the loop's)."""
        raise NotImplementedError(f"{type(self).__name__} handles no events")

    def flush(self) -> None:
        """Called after each gathered batch, so a batch can end in one write (e.g. one pipe write
        for all of it)."""

    def abort(self) -> None:
        """Called from the loop's thread when handle() is still busy at the end, to end what
        would outlive the run (e.g. kill a child process)."""

    def close(self) -> None:
        """Flush and release; called once, after the last event."""


# name -> factory(options: LoopConfig) -> Sink | None (None: not asked for in this run)
SINKS: Registry[Callable[[LoopConfig], Sink | None]] = Registry("sink")

IMAGE_QUEUE = 8
# a sink that fills a disk (saved frames, a recording) stops while less than this is left: a
# board's OS, journal, log and other outputs need room too, and an MP4 needs it for its index
DISK_RESERVE_BYTES = 64 << 20

# collect before http_view: the labelling page serves the store the collect sink opens
_MODULES = (
    "jsonlog", "mqtt", "collect", "http_view", "gpio", "command", "frames", "recording", "window",
    "modbus", "opcua",
)  # fmt: skip


def load_sinks() -> Registry:
    """Import the sink modules (each registers itself); their heavy imports stay inside them."""
    for module in _MODULES:
        importlib.import_module(f"edgecls.runtime.sinks.{module}")
    return SINKS


class SinkRunner:
    """One sink on its own thread behind a bounded queue (an inline one: on the publisher's
    thread). Records and decisions come from the loop's thread; a part's verdict from the
    station's (one publisher at a time, Station.emitting): an inline sink takes its own lock.

    The loop's side is a deque append and, only when the thread sleeps, one wake-up. It runs once
    a frame right after the model, with cold caches, where a `queue.Queue` round (a lock and a
    condition for every event) took the loop 35 us a frame for the MQTT sink alone, 18 now."""

    _CLOSE = object()

    def __init__(self, sink: Sink, context: SinkContext, depth: int = 64):
        self.sink = sink
        self.context = context
        # events that hold frames are big (a 640x480 frame is 0.9 MB): fewer of them wait
        self.depth = min(depth, IMAGE_QUEUE) if "image" in sink.needs else depth
        self.events: deque = deque()  # appended by publishers (deque appends are atomic)
        self.waiting = threading.Event()  # events wait for the thread
        self.room = threading.Condition()  # from a file, the loop waits here while it is full
        # the early filter, bound once; None where the sink keeps the default (a call a frame less)
        self.wants = sink.wants if type(sink).wants is not Sink.wants else None
        self.next_at = 0.0  # record time from which a rated sink takes the next frame
        self.linger = sink.linger
        self.hurry = threading.Event()  # ends a linger early: a decision waits for no batch
        self.failed_once = False
        self.inline = sink.inline
        self.thread = threading.Thread(target=self._work, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> None:
        if not self.inline:
            self.thread.start()

    def offer(self, event: Event, copies: dict) -> None:
        """From a live source, never blocks: a full queue drops the event and counts it. From a
        file there is no real time to keep, so the loop waits for the sink (until stopped)."""
        is_record = isinstance(event, Record)
        if is_record and self.sink.rate and self._too_soon(event.time):
            return
        if self.wants is not None and not self.wants(event):
            return
        if is_record:  # a queued record holds only the arrays this sink reads
            needs = self.sink.needs
            if needs not in copies:
                copies[needs] = event.keeping(needs)
            event = copies[needs]
        if self.inline:
            self._handle(event)
            return
        events = self.events
        if len(events) >= self.depth:
            if self.context.live:
                self.context.summary.add_dropped(self.sink.name)
                return
            if not self._wait_for_room():
                return
        events.append(event)
        if not self.waiting.is_set():
            self.waiting.set()
        if (
            self.linger
            and (not is_record or 2 * len(events) >= self.depth)
            and not self.hurry.is_set()
        ):
            self.hurry.set()

    def _too_soon(self, t: float) -> bool:
        """Sampling for a rated sink on the record's own clock (no clock read per frame); a
        clock set back restarts the sampling instead of pausing it."""
        period = 1.0 / self.sink.rate
        if 0.0 < self.next_at - t <= period:
            return True
        self.next_at = t + period
        return False

    def _wait_for_room(self) -> bool:
        with self.room:
            while len(self.events) >= self.depth:
                if self.context.stop.is_set():
                    return False
                self.room.wait(0.1)
        return True

    def _take(self) -> list:
        """What gathered, in order; the loop may append meanwhile (a deque is safe for that)."""
        self.waiting.wait()
        if self.linger:  # let a few events gather: one wake-up (and one network send) for all
            self.hurry.wait(self.linger)
            self.hurry.clear()  # before taking: what sets it from now on is in a later batch
        self.waiting.clear()  # likewise: an event appended from now on wakes the next round
        events = self.events
        batch = [events.popleft() for _ in range(len(events))]
        with self.room:
            self.room.notify()
        return batch

    def _work(self) -> None:
        flush = self.sink.flush
        while True:
            batch = self._take()
            for event in batch:
                if event is self._CLOSE:
                    return
                self._handle(event)
            if batch:
                try:
                    flush()
                except Exception as exc:
                    self.failed(exc)

    def _handle(self, event: Event) -> None:
        try:
            self.sink.handle(event)
        except Exception as exc:  # a sink's fault is the sink's: report, count, go on
            self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        self.context.summary.add_error(self.sink.name)
        if not self.failed_once:
            self.failed_once = True
            self.context.log(
                f"warning: output {self.sink.name} failed ({describe(exc)}); the loop goes on, "
                "further failures of this output are counted in the summary"
            )

    def request_close(self) -> None:
        """Queue the end marker behind what is already queued."""
        if self.inline:
            return
        self.events.append(self._CLOSE)
        self.waiting.set()
        self.hurry.set()

    def finish(self, deadline: float) -> None:
        """Wait (until `deadline`) for the sink to drain its queue, then close it."""
        if not self.inline:
            self.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():  # its thread still owns it: closing it now would race
            self.sink.abort()
            self.context.log(f"warning: output {self.sink.name} did not finish in time")
            self.context.summary.add_error(self.sink.name)
            return
        try:
            self.sink.close()
        except Exception as exc:
            self.failed(exc)


def describe(exc: BaseException) -> str:
    """An OSError as its strerror and file, anything else as its type and message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"


class Sinks:
    """All sinks of a run: opened together, fed together, closed together."""

    def __init__(self, sinks: list[Sink], context: SinkContext, depth: int = 64):
        self.context = context
        self.runners = [SinkRunner(s, context, depth) for s in sinks]

    def open(self) -> Sinks:
        opened = []
        try:
            for runner in self.runners:
                runner.sink.open(self.context)
                opened.append(runner)
        except BaseException:
            for runner in opened:
                runner.sink.close()
            raise
        for runner in self.runners:
            runner.start()
        return self

    @property
    def names(self) -> list[str]:
        return [r.sink.name for r in self.runners]

    def needs(self) -> frozenset[str]:
        """The Record arrays some sink reads: the loop keeps only those."""
        return frozenset().union(*(r.sink.needs for r in self.runners))

    def publish(self, event: Event) -> None:
        copies: dict = {}  # sinks with the same needs share one stripped copy of a record
        for runner in self.runners:
            runner.offer(event, copies)

    def close(self, timeout: float = 3.0) -> None:
        """All sinks drain in parallel within `timeout`, so a stop stays quick however many."""
        deadline = time.monotonic() + timeout
        for runner in self.runners:
            runner.request_close()
        for runner in self.runners:
            runner.finish(deadline)


def build_sinks(config: LoopConfig, context: SinkContext, extra: list[Sink] = ()) -> Sinks:
    """The registered sinks the run's options ask for, plus `extra` (e.g. the drift monitor)."""
    sinks = [s for make in load_sinks().values() if (s := make(config)) is not None]
    # extra first: the drift monitor closes before the outputs that report its last state
    return Sinks([*extra, *sinks], context, depth=config.queue_size)
