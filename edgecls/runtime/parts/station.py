"""The station: parts in trigger order, each answered within its inspection window.

Triggers come from any thread (a pin's callback, the MQTT client, an HTTP request, the Modbus or
OPC UA server); the loop captures frames for the oldest part still open; a watch thread gives the
fail-safe verdict to a part whose window ends first, whatever the loop is stuck in (a stalled
camera, a slow model). Verdicts leave in trigger order, each at most at its own deadline: a part
waits only for earlier parts, whose deadlines are earlier. Memory is bounded by the queue: a
trigger beyond it is answered fail-safe at once, in its place in the order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edgecls.runtime.parts.config import PartsConfig
from edgecls.runtime.parts.ids import PartIds
from edgecls.runtime.parts.verdict import VERDICT_RULES
from edgecls.runtime.records import Identity, PartCounts, PartRecord, Record


@dataclass(eq=False)
class Part:
    id: int
    origin: str
    triggered: float  # wall clock
    at: float  # monotonic time of the trigger
    capture_at: float  # monotonic: frames captured from here on belong to the part
    deadline: float  # monotonic: the fail-safe answers from here on
    plc_id: int | str | None = None
    encoder: int | None = None
    records: list[Record] = field(default_factory=list)
    captured: list[float] = field(default_factory=list)  # monotonic, one per record
    # the verdict, once there is one: (label, confidence, fail-safe reason or "")
    verdict: tuple[str | None, float, str] | None = None


class Station:
    def __init__(
        self,
        config: PartsConfig,
        identity: Identity,
        counts: PartCounts,
        min_confidence: float = 0.0,
        log=None,
    ):
        self.config = config
        self.identity = identity
        self.source = ""  # named by start()
        self.counts = counts
        # the outputs, from start() on; a trigger that comes in while they open waits for them
        self.publish: Callable[[PartRecord], None] | None = None
        self.min_confidence = min_confidence
        self.rule = VERDICT_RULES.get(config.rule)
        self.rejects = frozenset(config.rejects)
        self.ids = PartIds(config.state, log)
        self.cond = threading.Condition()
        self.order: deque[Part] = deque()  # parts not yet published, in trigger order
        self.open_parts = 0  # of those, the ones without a verdict
        self.emitting = threading.Lock()  # one publisher at a time keeps the order
        self.closed = False
        self.done = threading.Event()  # --max-parts answered
        self.watch = threading.Thread(target=self._watch, name="part-window", daemon=True)

    def start(self, publish: Callable[[PartRecord], None], source: str) -> Station:
        """Publish verdicts from here on (parts triggered while the outputs opened too)."""
        self.publish, self.source = publish, source
        self.watch.start()
        self._emit()
        return self

    @property
    def busy(self) -> bool:
        return self.open_parts > 0

    @property
    def ready(self) -> bool:
        return not self.closed and self.open_parts < self.config.queue

    def trigger(
        self, origin: str, plc_id: int | str | None = None, encoder: int | None = None
    ) -> Part | None:
        """A part is in front of the camera (from any thread); returns it with its id. None once
        the station is stopping: its outputs are closing, so a part made now could not be
        answered; the server that took the trigger says so to the PLC (503, a Bad status)."""
        c = self.config
        with self.cond:  # id, time and place in the order together: two triggers never cross
            if self.closed:
                return None
            at, wall = time.monotonic(), time.time()
            part = Part(
                self.ids.take(), origin, wall, at, at + c.capture_delay_ms / 1000,
                at + c.window_ms / 1000, plc_id, encoder,
            )  # fmt: skip
            self.order.append(part)
            if self.open_parts >= c.queue:
                part.verdict = (None, 0.0, f"{c.queue} parts were already waiting (--part-queue)")
                with self.counts.lock:
                    self.counts.overflow += 1
            else:
                self.open_parts += 1
            self.cond.notify_all()
        self._emit()
        return part

    def current(self) -> Part | None:
        """The oldest part still waiting for frames."""
        with self.cond:
            return self._first_open()

    def _first_open(self) -> Part | None:
        return next((p for p in self.order if p.verdict is None), None)

    def wait(self, timeout: float) -> Part | None:
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self._first_open() is not None, timeout)
            return self._first_open()

    def add_frame(self, part: Part, record: Record, captured: float) -> None:
        """A frame classified for `part` (captured at monotonic `captured`); the last one it
        needs gives the verdict."""
        with self.cond:
            if part.verdict is not None:  # the window answered first
                with self.counts.lock:
                    self.counts.late += 1
                return
            part.records.append(record)
            part.captured.append(captured)
            if len(part.records) < self.config.capture_frames:
                return
            label, confidence = self.rule(part.records, self.rejects, self.min_confidence)
            why = "" if label else f"unsure: confidence {confidence:.2f} below --min-confidence"
            self._answer(part, (label, confidence, why))
        self._emit()

    def _answer(self, part: Part, verdict) -> None:
        part.verdict = verdict
        self.open_parts -= 1
        self.cond.notify_all()

    def _watch(self) -> None:
        """Give the fail-safe verdict to each part whose window ends without one."""
        while True:
            with self.cond:
                if self.closed:
                    return
                part = self._first_open()
                wait = None if part is None else part.deadline - time.monotonic()
                if wait is None or wait > 0:
                    self.cond.wait(wait)
                    continue
                n, need = len(part.records), self.config.capture_frames
                why = f"no verdict within {self.config.window_ms:g} ms ({n} of {need} frames)"
                self._answer(part, (None, 0.0, why))
            self._emit()

    def _emit(self) -> None:
        """Publish the verdicts at the head of the order (one thread at a time keeps it)."""
        if self.publish is None:
            return
        with self.emitting:
            while True:
                with self.cond:
                    if not self.order or self.order[0].verdict is None:
                        return
                    part = self.order.popleft()
                record = self._record(part)
                self.counts.add(record)
                self.publish(record)
                if self.config.max_parts and self.counts.answered >= self.config.max_parts:
                    self.done.set()

    def _record(self, part: Part) -> PartRecord:
        label, confidence, why = part.verdict
        fail_safe = bool(why)
        if fail_safe:
            label = None if self.config.fail_safe == "reject" else self.config.fail_safe
        return PartRecord(
            part=part.id,
            origin=part.origin,
            triggered=part.triggered,
            label=label,
            confidence=confidence,
            reject=self.config.fail_safe_rejects if fail_safe else label in self.rejects,
            latency_ms=(time.monotonic() - part.at) * 1000,
            source=self.source,
            identity=self.identity,
            plc_id=part.plc_id,
            encoder=part.encoder,
            frames=tuple(r.frame for r in part.records),
            capture_ms=tuple((t - part.at) * 1000 for t in part.captured),
            frame_labels=tuple(r.label for r in part.records),
            fail_safe=fail_safe,
            reason=why,
            time=time.time(),
        )

    def close(self) -> None:
        """Answer every open part fail-safe (never dropped), publish them, stop the watch."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()  # the watch thread ends
            for part in self.order:
                if part.verdict is None:
                    self._answer(part, (None, 0.0, "the run stopped before a verdict"))
        self._emit()
        if self.watch.is_alive():
            self.watch.join(timeout=1.0)
