"""A candidate in shadow: it classifies the live frames the active model classified (the model
input the loop prepared, handed over newest-wins), and what it did is counted in constant memory:
top-1 agreement with the active model, both latencies over the same frames, the candidate's label
mix. Frames where the two disagree are kept (the last few, JPEG + JSON) for a person to look at."""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.runtime.models.state import atomic_bytes
from edgecls.runtime.records import LatencyStats, Record


@dataclass
class ShadowStats:
    bundle: str  # the candidate, as the state names it
    wanted: int  # frames to shadow before the decision
    frames: int = 0
    agree: int = 0
    labels: Counter = field(default_factory=Counter)
    candidate: LatencyStats = field(default_factory=LatencyStats)
    active: LatencyStats = field(default_factory=LatencyStats)
    state: str = "shadow"  # then promoted, refused, rejected, replaced
    why: str = ""

    def add(self, record: Record, label: str, latency_ms: float) -> bool:
        """Count one frame; whether the two models agree on it."""
        same = label == record.top
        self.frames += 1
        self.agree += same
        self.labels[label] += 1
        self.candidate.add(latency_ms)
        self.active.add(record.latency_ms)
        return same

    @property
    def agreement(self) -> float:
        return self.agree / self.frames if self.frames else 0.0

    def p90(self) -> tuple[float, float]:
        """(candidate, active) p90 latency, ms."""
        return self.candidate.percentile(90), self.active.percentile(90)

    def to_dict(self) -> dict:
        lat = {
            name: {f"p{q}": round(stats.percentile(q), 3) for q in (50, 90)}
            for name, stats in (("candidate", self.candidate), ("active", self.active))
        }
        return {
            "bundle": self.bundle,
            "state": self.state,
            "frames": self.frames,
            "wanted": self.wanted,
            "agreement": round(self.agreement, 4),
            "latency_ms": lat,
            "labels": dict(self.labels),
            **({"why": self.why} if self.why else {}),
        }

    def text(self) -> str:
        c, a = self.p90()
        return (
            f"shadow {self.bundle}: {self.frames} frames, agreement {self.agreement:.3f}, "
            f"p90 {c:.2f} ms vs active {a:.2f} ms ({self.state})"
        )


class Disagreements:
    """The last `keep` frames where the models disagreed, as NNNNNNNNN.jpg + .json in `folder`
    (ours: created here, emptied of our own files when a new candidate starts)."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = Path(folder), keep
        self.kept: deque[Path] = deque()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in [*self.folder.glob("*.jpg"), *self.folder.glob("*.json")]:
            old.unlink(missing_ok=True)

    def add(self, record: Record, label: str, confidence: float, image) -> None:
        if self.keep <= 0 or image is None:
            return
        import cv2

        stem = self.folder / f"{record.frame:09d}"
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return
        sidecar = {
            "frame": record.frame,
            "time": round(record.time, 3),
            "active": {"bundle": record.identity.bundle, "label": record.top,
                       "confidence": round(record.confidence, 4)},
            "candidate": {"label": label, "confidence": round(confidence, 4)},
        }  # fmt: skip
        atomic_bytes(stem.with_suffix(".jpg"), jpeg.tobytes())
        atomic_bytes(stem.with_suffix(".json"), json.dumps(sidecar, indent=2).encode())
        self.kept.append(stem)
        while len(self.kept) > self.keep:
            gone = self.kept.popleft()
            gone.with_suffix(".jpg").unlink(missing_ok=True)
            gone.with_suffix(".json").unlink(missing_ok=True)


def top(probs: np.ndarray, labels: tuple[str, ...]) -> tuple[str, float]:
    i = int(np.argmax(probs))
    return labels[i], float(probs[i])
