"""The options of part inspection, parsed and checked once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.runtime.parts.triggers import PART_TRIGGERS
from edgecls.runtime.parts.verdict import VERDICT_RULES


@dataclass(frozen=True)
class TriggerSpec:
    kind: str
    arg: str = ""

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @classmethod
    def parse(cls, text: str) -> TriggerSpec:
        kind, _, arg = text.strip().partition(":")
        trigger = PART_TRIGGERS.get(kind.lower())  # an unknown kind lists the known ones
        problem = trigger.check(arg)
        if problem:
            raise EdgeclsError(f"--part-trigger {text}: {problem} ({trigger.syntax})")
        return cls(kind.lower(), arg)


@dataclass(frozen=True)
class PartsConfig:
    triggers: tuple[TriggerSpec, ...]
    capture_delay_ms: float = 0.0
    capture_frames: int = 1
    rule: str = "any"
    window_ms: float = 200.0
    fail_safe: str = "reject"  # or a label of the bundle
    queue: int = 8  # parts waiting for the camera; more are answered fail-safe at once
    debounce_ms: float = 5.0
    state: Path | None = None  # the file of the next part id (None: the state folder)
    max_parts: int | None = None
    rejects: tuple[str, ...] = ()  # the --trigger labels: a part of one of them is rejected

    def __post_init__(self):
        checks = [
            ("--part-trigger", bool(self.triggers), "give at least one trigger"),
            ("--capture-delay-ms", _finite(self.capture_delay_ms, 0), "must be >= 0"),
            ("--capture-frames", 1 <= self.capture_frames <= 100, "must be within 1..100"),
            ("--inspect-window-ms", _finite(self.window_ms, 1e-3), "must be > 0"),
            ("--part-queue", 1 <= self.queue <= 10_000, "must be within 1..10000"),
            ("--trigger-debounce-ms", _finite(self.debounce_ms, 0), "must be >= 0"),
            ("--max-parts", self.max_parts is None or self.max_parts >= 1, "must be >= 1"),
        ]
        for option, ok, why in checks:
            if not ok:
                raise EdgeclsError(f"{option} {why}")
        VERDICT_RULES.get(self.rule)
        if self.capture_delay_ms >= self.window_ms:
            raise EdgeclsError(
                f"--capture-delay-ms {self.capture_delay_ms:g} is not inside --inspect-window-ms "
                f"{self.window_ms:g}: every part would be answered fail-safe; lengthen the window "
                "or shorten the delay"
            )

    def check_labels(self, labels: list[str]) -> None:
        if self.fail_safe != "reject" and self.fail_safe not in labels:
            raise EdgeclsError(
                f"--fail-safe {self.fail_safe}: give reject or one of the bundle's labels "
                f"({', '.join(labels)})"
            )

    def accepts(self, kind: str) -> bool:
        return any(t.kind == kind for t in self.triggers)

    @property
    def fail_safe_rejects(self) -> bool:
        return self.fail_safe == "reject" or self.fail_safe in self.rejects


def _finite(x: float, low: float) -> bool:
    return math.isfinite(x) and x >= low
