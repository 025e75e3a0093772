"""Anomaly bundles, TF-free: what an anomaly artifact's one output holds, how the board reads it,
and the figures its parity gate and reports share.

The output `anomaly` is one vector per image: `[score - t, map - t ...]` (1 + h*w values). The
threshold t was folded into the model's last bias when training calibrated it, so an artifact
alone tells ok (< 0) from anomaly (>= 0), and int8 quantizes the very numbers the verdict is
made on. The image score is the map's maximum, computed inside the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANOMALY = "anomaly"  # the output's name: the backends read it through `probabilities`
LABELS = ("ok", "anomaly")


@dataclass(frozen=True)
class AnomalySpec:
    """The manifest's `anomaly` entry: what the bundle's scores mean."""

    threshold: float  # in the trained score's units; the artifacts output score - threshold
    map_size: tuple[int, int]  # the anomaly map's rows and columns
    max_false_reject: float  # the share of good images the threshold was set to reject
    score: str = "max of the anomaly map"

    def __post_init__(self):
        if len(self.map_size) != 2 or min(self.map_size) < 1:
            raise ValueError(f"map_size {self.map_size}: must be two positive sizes")
        if not 0 <= self.max_false_reject < 1:
            raise ValueError(f"max_false_reject {self.max_false_reject}: must be in [0, 1)")


def probabilities(raw: np.ndarray) -> np.ndarray:
    """(ok, anomaly) per image: the sigmoid of score - t, so argmax is the verdict; float64 as
    the softmax, the same bits on ARM and x86. A score at the threshold is an anomaly: an int8
    output rounds scores within half a step of it to exactly t, and the tie must not fall to
    `ok` (argmax takes the first)."""
    m = raw[:, 0].astype(np.float64)
    p = (1.0 / (1.0 + np.exp(-m))).astype(np.float32)
    p = np.where(m >= 0, np.maximum(p, AT_THRESHOLD), p)
    return np.stack([1.0 - p, p], axis=1).astype(np.float32)


AT_THRESHOLD = np.nextafter(np.float32(0.5), np.float32(1))  # the least p that wins argmax


def margins(raw: np.ndarray) -> np.ndarray:
    """score - threshold per image (>= 0: anomaly)."""
    return raw[:, 0].astype(np.float32)


def maps(raw: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """The anomaly maps (N, h, w), in score - threshold units."""
    return raw[:, 1:].reshape(len(raw), *map_size).astype(np.float32)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return sums[inverse] / counts[inverse]


def auroc(good: np.ndarray, bad: np.ndarray) -> float:
    """Area under the ROC curve of scores (higher: more anomalous), ties counted half: the
    chance that a bad image scores above a good one (Mann-Whitney)."""
    good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
    if not len(good) or not len(bad):
        return float("nan")
    r = ranks(np.concatenate([good, bad]))[len(good) :]
    return float((r.sum() - len(bad) * (len(bad) + 1) / 2) / (len(good) * len(bad)))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: do two models order the images the same way?"""
    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def threshold_at(good_scores: np.ndarray, max_false_reject: float) -> float:
    """The lowest threshold that rejects at most `max_false_reject` of these good images (a
    score >= the threshold is an anomaly), just above the highest good score it lets pass."""
    s = np.sort(np.asarray(good_scores, np.float64))
    allowed = int(np.floor(max_false_reject * len(s)))  # good images it may reject
    top = s[len(s) - allowed - 1]  # the highest score that must pass
    return float(top + 1e-6 * max(1.0, abs(top)))
