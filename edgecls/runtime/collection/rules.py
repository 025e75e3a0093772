"""Which frames to keep for labelling, and how many: pure and on the loop's thread, so it costs
the loop a comparison or two a frame and nothing else.

A frame is kept for what it can teach the next model: the model was unsure of it (a small top-1
margin, a low confidence), the input has drifted from what the model was checked on, or it is a
random audit frame. Audit frames are spread evenly over the classes the model sees (each class has
its own clock, jittered so a periodic line is not sampled in phase): the data is then not only
hard cases, and a rare class is not drowned by the common one. All reasons share one rate limit,
so a burst of bad frames cannot fill the disk or the labellers' day.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.runtime.records import Record

BURST = 5  # frames kept back to back before the rate limit bites


@dataclass(frozen=True)
class CollectConfig:
    folder: Path
    margin: float = 0.15  # top-1 minus top-2 below this: the model was unsure
    confidence: float = 0.6  # top-1 below this: the model was unsure
    audit_per_minute: float = 1.0  # random frames a minute, shared evenly among the classes
    rate: float = 1.0  # frames kept a second at most, every reason together
    max_mb: float = 1024.0  # the queue's quota: the oldest unlabelled frames go first
    seed: int | None = None  # the audit's jitter, fixed for tests

    def __post_init__(self):
        checks = (
            ("--collect-margin", 0.0 <= self.margin <= 1.0, "must be within 0..1"),
            ("--collect-confidence", 0.0 <= self.confidence <= 1.0, "must be within 0..1"),
            ("--collect-audit", self.audit_per_minute >= 0, "must be >= 0 (0: no audit frames)"),
            ("--collect-rate", self.rate > 0, "must be > 0"),
            ("--collect-max-mb", self.max_mb > 0, "must be > 0"),
        )
        for option, ok, why in checks:
            if not ok:
                raise EdgeclsError(f"{option} {why}")


class CollectRules:
    """Decides, record by record, whether to keep a frame and why."""

    def __init__(self, config: CollectConfig, labels: tuple[str, ...]):
        self.config = config
        self.random = random.Random(config.seed)
        # each class's audit comes round this often; every class's first frame is audited
        self.audit_every = (
            60.0 * max(len(labels), 1) / config.audit_per_minute
            if config.audit_per_minute
            else None
        )
        self.next_audit: dict[str, float] = {}
        self.tokens, self.filled_at = float(BURST), None

    def reasons(self, record: Record, drifting: bool) -> tuple[str, ...]:
        """Why this frame is worth a person's look ((): it is not)."""
        why = []
        probs = record.probs
        top2 = heapq.nlargest(2, probs) if len(probs) > 1 else [record.confidence, 0.0]
        if top2[0] - top2[1] < self.config.margin:
            why.append("margin")
        if record.confidence < self.config.confidence:
            why.append("confidence")
        if drifting:
            why.append("drift")
        if self._audit_due(record.top, record.time):
            why.append("audit")
        return tuple(why)

    def _audit_due(self, label: str, t: float) -> bool:
        if self.audit_every is None:
            return False
        due = self.next_audit.get(label, t)
        return not (t < due <= t + 2 * self.audit_every)  # a clock set back starts it again

    def kept(self, record: Record, reasons: tuple[str, ...]) -> None:
        """The frame was kept: its class's audit clock moves on (also when it was kept for
        another reason: it is in the data either way). The clock counts from when the audit was
        due, not from when a frame of a rare class next came, so a rare class keeps its share;
        a class away for longer than a period starts afresh (no burst to catch up)."""
        if self.audit_every is None:
            return
        t, every = record.time, self.audit_every
        due = self.next_audit.get(record.top, t)
        base = due if 0.0 <= t - due < every else t
        step = every * self.random.uniform(0.5, 1.5)
        self.next_audit[record.top] = max(base + step, t + every / 4)

    def admit(self, t: float) -> bool:
        """The shared rate limit (a token bucket on the records' clock)."""
        if self.filled_at is not None:
            elapsed = max(0.0, t - self.filled_at)
            self.tokens = min(float(BURST), self.tokens + elapsed * self.config.rate)
        self.filled_at = t
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
