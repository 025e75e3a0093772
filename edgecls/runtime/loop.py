"""`edgecls run`: the camera loop on the board. Reads frames, classifies them with the bundle's
artifact, reports, and keeps going: corrupt frames are skipped and counted, a dropped live source
is reopened, Ctrl-C and SIGTERM end cleanly with a summary and flushed outputs."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.runtime.backends import RuntimeOptions
from edgecls.runtime.bundle import load_bundle
from edgecls.runtime.select import choose
from edgecls.runtime.sources import CaptureSettings, SourceEnded, open_source


@dataclass(frozen=True)
class RunConfig:
    bundle: Path
    source: str
    backend: str = "auto"
    artifact: str | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    allow_failed: bool = False
    headless: bool = False
    json: bool = False
    min_confidence: float = 0.0
    every: int = 1  # classify every Nth frame
    save_dir: Path | None = None
    save_labels: tuple[str, ...] = ()  # empty: save every classified frame
    record: Path | None = None
    max_frames: int | None = None


@dataclass
class Summary:
    frames: int = 0  # frames read from the source
    classified: int = 0
    corrupt: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    saved: int = 0

    def to_dict(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "frames": self.frames,
            "classified": self.classified,
            "corrupt_frames": self.corrupt,
            "reconnects": self.reconnects,
            "seconds": round(self.seconds, 3),
            "fps": round(self.classified / self.seconds, 2) if self.seconds > 0 else 0.0,
            "latency_ms": {
                q: round(float(np.percentile(lat, int(q[1:]))), 3) for q in ("p50", "p90", "p99")
            },
            "labels": dict(self.labels),
            "saved": self.saved,
        }

    def text(self) -> str:
        d = self.to_dict()
        lat = d["latency_ms"]
        counts = (
            ", ".join(f"{k} {v}" for k, v in sorted(d["labels"].items(), key=lambda kv: -kv[1]))
            or "none"
        )
        return (
            f"summary: {d['frames']} frames, {d['classified']} classified, "
            f"{d['corrupt_frames']} corrupt, "
            f"{d['reconnects']} reconnects; {d['fps']} FPS; latency p50 {lat['p50']} ms, "
            f"p90 {lat['p90']} ms, p99 {lat['p99']} ms; labels: {counts}"
        )


class _Stop:
    """SIGINT/SIGTERM set a flag the loop checks, so outputs are flushed and the camera released."""

    def __init__(self):
        self.event = threading.Event()
        self._also: list[threading.Event] = []
        self._previous = {}

    def follow(self, event: threading.Event | None) -> None:
        """Also set `event` (a live source's own) on a signal, so its waits end too."""
        if event is not None and event is not self.event:
            self._also.append(event)

    def _set(self, *_):
        self.event.set()
        for event in self._also:
            event.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._set)
        return self.event

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _overlay(frame: np.ndarray, label: str, confidence: float, fps: float) -> np.ndarray:
    out = frame.copy()
    scale = max(0.5, frame.shape[1] / 900)
    cv2.putText(
        out,
        f"{label} {confidence:.2f}",
        (10, int(30 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (0, 255, 0),
        max(1, int(2 * scale)),
        cv2.LINE_AA,
    )
    cv2.putText(
        out,
        f"{fps:.1f} FPS",
        (10, int(60 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale * 0.7,
        (0, 255, 255),
        max(1, int(scale)),
        cv2.LINE_AA,
    )
    return out


class _Outputs:
    """Window, recording and saved frames: created lazily, always closed."""

    def __init__(self, config: RunConfig, log):
        self.config = config
        self.log = log
        self.writer = None
        self.window = not config.headless
        if config.save_dir:
            config.save_dir.mkdir(parents=True, exist_ok=True)

    def handle(self, frame, index, label, confidence, fps, summary) -> bool:
        """Returns False when the user closed the window (q or Esc)."""
        c = self.config
        if c.save_dir and label is not None and (not c.save_labels or label in c.save_labels):
            cv2.imwrite(str(c.save_dir / f"frame_{index:07d}_{label}_{confidence:.2f}.jpg"), frame)
            summary.saved += 1
        if not (self.window or c.record):
            return True
        shown = _overlay(frame, label or "uncertain", confidence, fps)
        if c.record:
            if self.writer is None:
                c.record.parent.mkdir(parents=True, exist_ok=True)
                self.writer = cv2.VideoWriter(
                    str(c.record),
                    cv2.VideoWriter_fourcc(*"mp4v"),
                    15.0,
                    (frame.shape[1], frame.shape[0]),
                )
            self.writer.write(shown)
        if self.window:
            try:
                cv2.imshow("edgecls", shown)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    return False
            except cv2.error:
                self.log(
                    "no display available (or OpenCV built headless): continuing with --headless"
                )
                self.window = False
        return True

    def close(self):
        if self.writer is not None:
            self.writer.release()
        if self.window:
            with contextlib.suppress(cv2.error):
                cv2.destroyAllWindows()


def run(config: RunConfig, out=None, log=None, source=None) -> Summary:
    """Run the loop until the source ends, max_frames, the window closes, or a signal."""
    out = out or sys.stdout
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if config.every < 1:
        raise EdgeclsError("--every must be at least 1")
    bundle = load_bundle(config.bundle)
    unknown = sorted(set(config.save_labels) - set(bundle.labels))
    if unknown:
        raise EdgeclsError(
            f"--save-labels {','.join(unknown)}: not in the bundle's labels "
            f"({', '.join(bundle.labels)})"
        )
    choice = choose(
        bundle, config.backend, config.artifact, config.runtime, config.allow_failed, log=log
    )
    predictor = choice.predictor
    for w in [*predictor.warnings, bundle.unchecked_here()]:
        if w:
            log(f"warning: {w}")
    labels = bundle.labels
    spec = bundle.input_spec
    stopper = _Stop()
    source = source or open_source(config.source, config.capture, stopper.event)
    stopper.follow(getattr(source, "stop", None))
    log(
        f"running {choice.artifact.file} "
        f"({choice.artifact.format} {choice.artifact.precision}, "
        f"parity {'passed' if choice.artifact.passed else 'FAILED'}) "
        f"on {predictor.description}; "
        f"chosen: {choice.reason}; source: {source.name}"
    )

    summary = Summary()
    outputs = _Outputs(config, log)
    start = last_status = time.perf_counter()
    try:
        with stopper as stop:
            while not stop.is_set():
                if config.max_frames is not None and summary.classified >= config.max_frames:
                    break
                try:
                    frame = source.read()
                except SourceEnded:
                    break
                summary.frames += 1
                if frame.image is None:
                    summary.corrupt += 1
                    continue
                if frame.index % config.every:
                    continue
                t0 = time.perf_counter()
                probs = predictor.predict(spec.frame_to_input(frame.image)[None])[0]
                latency = (time.perf_counter() - t0) * 1000
                summary.classified += 1
                summary.latencies_ms.append(latency)
                top = int(probs.argmax())
                confidence = float(probs[top])
                label = labels[top] if confidence >= config.min_confidence else None
                summary.labels[label or "uncertain"] += 1
                if config.json:
                    out.write(
                        json.dumps(
                            {
                                "frame": frame.index,
                                "time": round(time.time(), 3),
                                "label": label,
                                "confidence": round(confidence, 4),
                                "latency_ms": round(latency, 3),
                                **({"name": frame.name} if frame.name else {}),
                            }
                        )
                        + "\n"
                    )
                    out.flush()
                now = time.perf_counter()
                elapsed = now - start
                if not config.json and now - last_status >= 2.0:  # a heartbeat for headless logs
                    last_status = now
                    log(
                        f"{summary.classified} frames, {summary.classified / elapsed:.1f} FPS, "
                        f"last: {label or 'uncertain'} {confidence:.2f}"
                    )
                if not outputs.handle(
                    frame.image,
                    frame.index,
                    label,
                    confidence,
                    summary.classified / elapsed if elapsed else 0.0,
                    summary,
                ):
                    break
    finally:
        summary.seconds = time.perf_counter() - start
        summary.reconnects = getattr(source, "reconnects", 0)
        source.close()
        outputs.close()
        if getattr(source, "ended_early", None):
            log(f"warning: {source.ended_early}")
        log(summary.text())
    return summary
