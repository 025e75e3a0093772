"""From frame labels to decisions: a single frame is noise, a run of them is a part to reject.

`--trigger def --consecutive 3` fires once when three frames in a row say `def`; `--window 10
--min-hits 6` fires once when six of the last ten do. A rule fires on the rising edge and re-arms
when the condition clears, so one bad part gives one pulse, not one per frame.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from edgecls.errors import EdgeclsError
from edgecls.runtime.records import Decision, Record


@dataclass(frozen=True)
class DecisionConfig:
    trigger: tuple[str, ...] = ()  # empty: no decisions
    consecutive: int = 1
    window: int | None = None  # with min_hits: K of the last N frames
    min_hits: int | None = None

    def check_labels(self, labels: list[str]) -> None:
        unknown = sorted(set(self.trigger) - set(labels))
        if unknown:
            raise EdgeclsError(
                f"--trigger {','.join(unknown)}: not in the bundle's labels ({', '.join(labels)})"
            )
        if self.consecutive < 1:
            raise EdgeclsError("--consecutive must be at least 1")
        if self.window is not None and self.consecutive != 1:
            raise EdgeclsError(
                "--consecutive and --window are two rules: give --consecutive N, or --window N "
                "--min-hits K"
            )
        if (self.window is None) != (self.min_hits is None):
            raise EdgeclsError("--window and --min-hits go together: give both or neither")
        if self.window is not None and not 1 <= self.min_hits <= self.window:
            raise EdgeclsError("--min-hits must be between 1 and --window")

    @property
    def description(self) -> str:
        if self.window is not None:
            return f"{self.min_hits} of {self.window}"
        return f"{self.consecutive} consecutive"


class DecisionRule:
    """Feed it records in order; it returns a Decision on the frame where the rule fires."""

    def __init__(self, config: DecisionConfig):
        self.config = config
        self.triggers = frozenset(config.trigger)
        size = config.window if config.window is not None else config.consecutive
        self.need = config.min_hits if config.window is not None else config.consecutive
        self.recent: deque[str | None] = deque(maxlen=size)
        self.armed = True

    def update(self, record: Record) -> Decision | None:
        if not self.triggers:
            return None
        self.recent.append(record.label if record.label in self.triggers else None)
        hits = [lab for lab in self.recent if lab is not None]
        if len(hits) < self.need:
            self.armed = True
            return None
        if not self.armed:
            return None
        self.armed = False
        return Decision(
            frame=record.frame,
            time=record.time,
            label=Counter(hits).most_common(1)[0][0],
            hits=len(hits),
            window=len(self.recent),
            rule=self.config.description,
            source=record.source,
            identity=record.identity,
        )
