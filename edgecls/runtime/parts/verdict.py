"""How a part's frames make one verdict (`--part-rule`). Each rule gives a label, or None when
the frames are too unsure (below --min-confidence) to answer: the station then answers fail-safe.
Where labels tie, a reject label wins: a part in doubt is not waved through."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from edgecls.registry import Registry
from edgecls.runtime.records import Record

Verdict = tuple[str | None, float]  # (label or None, confidence)
VerdictRule = Callable[[Sequence[Record], frozenset[str], float], Verdict]
VERDICT_RULES: Registry[VerdictRule] = Registry("--part-rule")


def _most_common(records: Sequence[Record], rejects: frozenset[str]) -> Verdict:
    counts = Counter(r.label for r in records if r.label is not None)
    if not counts:
        return None, max(r.confidence for r in records)
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0] in rejects))[0]
    return best, float(np.mean([r.confidence for r in records if r.label == best]))


@VERDICT_RULES.register("any")
def any_reject(records: Sequence[Record], rejects: frozenset[str], min_confidence: float):
    """A reject label on any frame rejects the part (a defect seen once is a defect)."""
    hits = [r for r in records if r.label in rejects]
    return _most_common(hits, rejects) if hits else _most_common(records, rejects)


@VERDICT_RULES.register("majority")
def majority(records: Sequence[Record], rejects: frozenset[str], min_confidence: float):
    """The label most frames give."""
    return _most_common(records, rejects)


@VERDICT_RULES.register("mean")
def mean_probability(records: Sequence[Record], rejects: frozenset[str], min_confidence: float):
    """The label of the mean probabilities over the frames."""
    mean = np.mean([r.probs for r in records], axis=0)
    top = int(np.argmax(mean))
    confidence = float(mean[top])
    label = records[0].identity.labels[top]
    return (label if confidence >= min_confidence else None), confidence
