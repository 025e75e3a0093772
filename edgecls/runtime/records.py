"""What the loop produces: one record per classified frame, one per decision, and a summary that
stays the same size however long the board runs (streaming latency histogram, no per-frame list).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edgecls.bundle.anomaly import AnomalySpec

# Prometheus buckets for the latency histogram, in milliseconds.
LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass(frozen=True)
class Identity:
    """Which model made a record: the bundle, the artifact file and the sha256 that guards it."""

    bundle: str
    artifact: str
    sha256: str
    labels: tuple[str, ...]
    roi: tuple[int, int, int, int] | None = None
    anomaly: AnomalySpec | None = None  # an anomaly bundle's threshold and map

    @classmethod
    def of(cls, bundle, artifact, roi) -> Identity:
        """The identity of `artifact` of a loaded bundle (bundle/folder.py) run with `roi`."""
        m = bundle.manifest
        return cls(m.name, artifact.file, artifact.sha256, tuple(bundle.labels), roi, m.anomaly)

    def to_dict(self) -> dict:
        return {
            "bundle": self.bundle,
            "artifact": self.artifact,
            "sha256": self.sha256,
            "roi": list(self.roi) if self.roi else None,
        }


HEAVY = frozenset({"image", "model_input"})  # Record's arrays, never serialised


@dataclass
class Record:
    """One classified frame. `image` (the BGR frame) and `model_input` travel to the sinks that
    draw, save or measure them; they are never serialised."""

    frame: int
    time: float
    label: str | None  # None: below --min-confidence ("uncertain")
    top: str  # the most probable label, whatever its confidence
    confidence: float
    probs: tuple[float, ...]
    latency_ms: float
    source: str
    identity: Identity
    name: str = ""  # the file name, for image-folder sources
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    model_input: np.ndarray | None = field(default=None, repr=False, compare=False)
    kind: str = "frame"
    part: int | None = None  # the part this frame was captured for (--part-trigger)
    # an anomaly bundle's: the image score, and the map (h, w) in score - threshold units,
    # drawn by the overlay, never serialised (identity.anomaly holds the threshold)
    score: float | None = None
    anomaly_map: np.ndarray | None = field(default=None, repr=False, compare=False)

    def keeping(self, fields: frozenset[str]) -> Record:
        """This record without the arrays (`image`, `model_input`) not named in `fields`, so a
        queued record holds no frame its sink never reads and the frame's memory is reused."""
        drop = [f for f in HEAVY if f not in fields and getattr(self, f) is not None]
        if not drop:
            return self
        light = object.__new__(Record)  # a shallow copy, the cheapest Python has: once a frame
        light.__dict__.update(self.__dict__)
        for f in drop:
            light.__dict__[f] = None
        return light

    def to_dict(self) -> dict:
        return {
            "type": "frame",
            "frame": self.frame,
            "time": round(self.time, 3),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probs": {
                k: round(float(p), 4) for k, p in zip(self.identity.labels, self.probs, strict=True)
            },
            "latency_ms": round(self.latency_ms, 3),
            "source": self.source,
            **({"name": self.name} if self.name else {}),
            **({"part": self.part} if self.part is not None else {}),
            **self._anomaly(),
            **self.identity.to_dict(),
        }

    def _anomaly(self) -> dict:
        spec = self.identity.anomaly
        if spec is None or self.score is None:
            return {}
        return {"score": round(self.score, 4), "threshold": round(spec.threshold, 4)}


@dataclass(frozen=True)
class Decision:
    """A debounced trigger: the rule saw enough trigger labels to act (reject, count, alarm)."""

    frame: int
    time: float
    label: str
    hits: int
    window: int
    rule: str
    source: str
    identity: Identity
    kind: str = "decision"

    def to_dict(self) -> dict:
        return {
            "type": "decision",
            "frame": self.frame,
            "time": round(self.time, 3),
            "label": self.label,
            "hits": self.hits,
            "window": self.window,
            "rule": self.rule,
            "source": self.source,
            **self.identity.to_dict(),
        }


@dataclass(frozen=True)
class PartRecord:
    """The one verdict on one part (--part-trigger): what triggered it, the frames captured for it
    after the trigger, the label they add up to, and whether the station answered in time. A part
    that got no verdict within the inspection window carries the fail-safe verdict, flagged."""

    part: int  # the station's id: increasing, unique across restarts
    origin: str  # the trigger that made it: gpio:17, mqtt, http, modbus, opcua, interval
    triggered: float  # wall clock
    label: str | None  # None: a fail-safe reject
    confidence: float
    reject: bool  # a --trigger label, or the fail-safe reject
    latency_ms: float  # trigger -> verdict
    source: str
    identity: Identity
    plc_id: int | str | None = None  # the line's own id for the part, echoed
    encoder: int | None = None
    frames: tuple[int, ...] = ()  # the source's frame indexes the verdict used
    capture_ms: tuple[float, ...] = ()  # when each was captured, after the trigger
    frame_labels: tuple[str | None, ...] = ()
    fail_safe: bool = False
    reason: str = ""  # why the fail-safe verdict
    time: float = 0.0  # wall clock of the verdict
    kind: str = "part"

    def to_dict(self) -> dict:
        return {
            "type": "part",
            "part": self.part,
            "plc_id": self.plc_id,
            "encoder": self.encoder,
            "origin": self.origin,
            "triggered": round(self.triggered, 3),
            "time": round(self.time, 3),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "reject": self.reject,
            "fail_safe": self.fail_safe,
            **({"reason": self.reason} if self.reason else {}),
            "latency_ms": round(self.latency_ms, 3),
            "frames": list(self.frames),
            "capture_ms": [round(t, 3) for t in self.capture_ms],
            "frame_labels": list(self.frame_labels),
            "source": self.source,
            **self.identity.to_dict(),
        }


Event = Record | Decision | PartRecord


def is_reject(event: Event) -> bool:
    """What the reject outputs (a GPIO pulse, --on-trigger) act on: a decision of the free-running
    rule, or a part to reject."""
    return isinstance(event, Decision) or (isinstance(event, PartRecord) and event.reject)


class LatencyStats:
    """Percentiles in constant memory: a log-spaced histogram (2 % wide bins, 1 us to 100 s), so
    p50/p90/p99 are within 1 % of the exact value after any number of frames."""

    _LOW, _RATIO, _BINS = 1e-3, 1.02, 930

    def __init__(self):
        self.counts = np.zeros(self._BINS, dtype=np.int64)
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # Prometheus: per bucket, +Inf last
        self.count = 0
        self.total_ms = 0.0

    def add(self, ms: float) -> None:
        i = int(math.log(max(ms, self._LOW) / self._LOW, self._RATIO))
        self.counts[min(i, self._BINS - 1)] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.count += 1
        self.total_ms += ms

    def percentile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q / 100 * (self.count - 1)
        i = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        return self._LOW * self._RATIO ** (i + 0.5)

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """(le, count) pairs as Prometheus wants them, +Inf last."""
        out, total = [], 0
        for le, n in zip(
            [*(str(float(b)) for b in LATENCY_BUCKETS_MS), "+Inf"], self.buckets, strict=True
        ):
            total += n
            out.append((le, total))
        return out


@dataclass
class PartCounts:
    """The station's counters: parts answered, how, and how fast (trigger -> verdict)."""

    answered: int = 0
    rejected: int = 0
    fail_safe: int = 0
    overflow: int = 0  # triggers beyond the queue, answered fail-safe at once
    late: int = 0  # verdicts the model reached after the window had answered fail-safe
    labels: Counter = field(default_factory=Counter)
    latency: LatencyStats = field(default_factory=LatencyStats)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, part: PartRecord) -> None:
        with self.lock:
            self.answered += 1
            self.rejected += part.reject
            self.fail_safe += part.fail_safe
            self.labels[part.label or "fail-safe"] += 1
            self.latency.add(part.latency_ms)

    def to_dict(self) -> dict:
        with self.lock:
            return {
                "answered": self.answered,
                "rejected": self.rejected,
                "fail_safe": self.fail_safe,
                "overflow": self.overflow,
                "late": self.late,
                "labels": dict(self.labels),
                "latency_ms": {f"p{q}": round(self.latency.percentile(q), 3) for q in (50, 90, 99)},
            }

    def text(self) -> str:
        d = self.to_dict()
        lat = d["latency_ms"]
        text = (
            f"parts {d['answered']} ({d['rejected']} rejected, {d['fail_safe']} fail-safe"
            + (f", {d['overflow']} over the queue" if d["overflow"] else "")
            + f"), trigger to verdict p50 {lat['p50']} ms, p99 {lat['p99']} ms"
        )
        return text


@dataclass
class Summary:
    """Counters of one run; constant size. Written by the loop thread, read by sinks (/metrics)."""

    frames: int = 0  # frames read from the source
    classified: int = 0
    corrupt: int = 0
    unreadable: int = 0  # images of a folder that could not be read or cropped (named in the log)
    reconnects: int = 0
    skipped: int = 0  # live camera frames replaced by newer ones before the model saw them
    decisions: int = 0
    seconds: float = 0.0
    latency: LatencyStats = field(default_factory=LatencyStats)
    labels: Counter = field(default_factory=Counter)
    saved: int = 0
    collected: int = 0  # frames kept for labelling (--collect)
    output_errors: Counter = field(default_factory=Counter)  # per sink
    # per sink: a full queue, a broker's queue, frames not saved on a nearly full disk
    outputs_dropped: Counter = field(default_factory=Counter)
    drift: dict = field(default_factory=dict)  # the drift monitor's last state
    parts: PartCounts | None = None  # with --part-trigger
    shadow: dict = field(default_factory=dict)  # the last candidate's shadow (model swaps)
    swaps: int = 0  # models swapped in while running (promoted, rolled back)
    started: float = field(default_factory=time.monotonic)
    # the run's start (for `edgecls run`: its process's), and the seconds from it to the first
    # record: how long a restarted service leaves the line uninspected
    began: float = field(default_factory=time.monotonic)
    first_record: float | None = None
    last_frame: float | None = None  # monotonic time of the last frame read
    interrupted_by: int | None = None  # the signal (SIGINT, SIGHUP) that ended a clean stop
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_error(self, sink: str) -> None:
        with self.lock:
            self.output_errors[sink] += 1

    def add_dropped(self, sink: str, n: int = 1) -> None:
        with self.lock:
            self.outputs_dropped[sink] += n

    def fps(self) -> float:
        seconds = self.seconds or (time.monotonic() - self.started)
        return self.classified / seconds if seconds > 0 else 0.0

    def to_dict(self) -> dict:
        with self.lock:
            errors, dropped = dict(self.output_errors), dict(self.outputs_dropped)
        return {
            "frames": self.frames,
            "classified": self.classified,
            "corrupt_frames": self.corrupt,
            "unreadable_images": self.unreadable,
            "reconnects": self.reconnects,
            "skipped_frames": self.skipped,
            "decisions": self.decisions,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps(), 2),
            "latency_ms": {f"p{q}": round(self.latency.percentile(q), 3) for q in (50, 90, 99)},
            "first_record_s": None if self.first_record is None else round(self.first_record, 3),
            "labels": dict(self.labels),
            "saved": self.saved,
            "collected": self.collected,
            "output_errors": errors,
            "outputs_dropped": dropped,
            **({"drift": self.drift} if self.drift else {}),
            **({"parts": self.parts.to_dict()} if self.parts else {}),
            **({"swaps": self.swaps} if self.swaps else {}),
            **({"shadow": self.shadow} if self.shadow else {}),
        }

    def text(self) -> str:
        d = self.to_dict()
        lat = d["latency_ms"]
        counts = (
            ", ".join(f"{k} {v}" for k, v in sorted(d["labels"].items(), key=lambda kv: -kv[1]))
            or "none"
        )
        parts = [
            f"summary: {d['frames']} frames, {d['classified']} classified, "
            f"{d['corrupt_frames']} corrupt, {d['reconnects']} reconnects; {d['fps']} FPS; "
            f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms; "
            f"labels: {counts}"
        ]
        if d["first_record_s"] is not None:
            parts.append(f"first record {d['first_record_s']:.2f} s after start")
        if d["unreadable_images"]:
            parts.append(f"{d['unreadable_images']} images not classified (named above)")
        if d["skipped_frames"]:  # the camera is faster than the model: it sees the newest frame
            parts.append(f"skipped {d['skipped_frames']} older camera frames")
        if d["decisions"]:
            parts.append(f"decisions {d['decisions']}")
        if d["saved"]:
            parts.append(f"saved {d['saved']}")
        if d["collected"]:
            parts.append(f"collected {d['collected']} for labelling")
        for key, what in (("output_errors", "output errors"), ("outputs_dropped", "dropped")):
            if d[key]:
                parts.append(f"{what}: " + ", ".join(f"{k} {v}" for k, v in d[key].items()))
        if self.parts:
            parts.append(self.parts.text())
        if self.drift:
            parts.append(f"drift {self.drift.get('score', 0):.2f} ({self.drift.get('state')})")
        if self.swaps:
            parts.append(f"models swapped {self.swaps}")
        if self.shadow:
            s = self.shadow
            parts.append(
                f"shadow {s['bundle']}: {s['frames']} frames, agreement {s['agreement']}, p90 "
                f"{s['latency_ms']['candidate']['p90']} ms vs {s['latency_ms']['active']['p90']}"
                f" ms ({s['state']})"
            )
        return "; ".join(parts)
