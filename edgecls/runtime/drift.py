"""Drift on the board: does the camera still show the world the model was checked on?

At export, `reference_stats` summarises the parity set: per-image input features (channel means
and spreads, sharpness), the confidence histogram and the class mix. On the device,
`DriftMonitor` keeps the same figures over a rolling window of frames and scores the difference:

- input shift: how far the window's mean of each feature is from the reference mean, in units of
  the reference's spread between images (a darker scene moves the channel means, a blurred lens
  the sharpness, a colour cast one channel against the others);
- PSI (population stability index) of the top-class confidence: the model growing unsure.

- brightness: the window's mean level over the reference's, as a ratio.

The score is the largest of `shift / 3`, `PSI / 0.25` and `|ln(brightness ratio)| / ln(1.6)` (3
spreads, PSI 0.25 and a 1.6x change of light are the "significant" marks), so 1.0 is the default
warning threshold. Everything here is
numpy and OpenCV on the model's input (already small), on the loop's thread: at most 10 frames a
second once the window is full (sinks/drift.py).
"""

from __future__ import annotations

import math
from collections import deque

import cv2
import numpy as np

from edgecls.errors import EdgeclsError

VERSION = 1
CONF_BINS = 10
FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "sharpness")
SHIFT_SCALE, PSI_SCALE = 3.0, 0.25
# A scene 1.6x darker or brighter than the reference on average: a lighting change. Measured as a
# ratio, because a reference of many kinds of parts spreads its per-image brightness too widely
# for a shift in spreads to see even a 2x darker scene.
LIGHT_SCALE = math.log(1.6)


def image_features(image_rgb: np.ndarray) -> np.ndarray:
    """The 7 features of one RGB uint8 image (H, W, 3), as float64: channel means, channel
    spreads, and the log of the Laplacian's variance (the usual focus measure; on a log scale a
    blur moves it by the same amount whatever the scene). Measured at <= 64 px, in OpenCV calls
    that release the GIL, so the loop's thread barely notices."""
    h, w = image_rgb.shape[:2]
    if max(h, w) > 64:  # bilinear: 20x cheaper than area-averaging here, the same on both sides
        k = max(h, w) / 64
        size = (max(1, round(w / k)), max(1, round(h / k)))
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_LINEAR)
    mean, std = cv2.meanStdDev(image_rgb)
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    sharp = np.log1p(float(lap_std[0, 0]) ** 2)
    return np.concatenate([mean[:, 0], std[:, 0], [sharp]]).astype(np.float64)


def confidence_histogram(confidences: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(confidences, 0, 1), bins=CONF_BINS, range=(0.0, 1.0))
    return counts


def reference_stats(images_uint8: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Reference statistics of a set of model inputs (N, H, W, 3 RGB uint8) and their predicted
    probabilities (N, C): what the manifest stores as `drift_reference` (JSON-serialisable)."""
    images_uint8, probs = np.asarray(images_uint8), np.asarray(probs)
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3 or len(images_uint8) < 2:
        raise ValueError("reference_stats needs at least 2 RGB images shaped (N, H, W, 3)")
    if probs.shape != (len(images_uint8), len(labels)):
        raise ValueError(f"probs must be (N, {len(labels)}), got {probs.shape}")
    feats = np.stack([image_features(im) for im in images_uint8])
    pixels = images_uint8.reshape(-1, 3).astype(np.float64)
    top = probs.argmax(axis=1)
    return {
        "version": VERSION,
        "images": len(images_uint8),
        "channel_mean": _round(pixels.mean(axis=0)),
        "channel_std": _round(pixels.std(axis=0)),
        "features": list(FEATURES),
        "feature_mean": _round(feats.mean(axis=0)),
        "feature_std": _round(feats.std(axis=0)),
        "confidence_bins": CONF_BINS,
        "confidence_hist": confidence_histogram(probs.max(axis=1)).tolist(),
        "class_mix": {lab: round(float(np.mean(top == i)), 4) for i, lab in enumerate(labels)},
    }


def _round(a: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in a]


def psi(reference_counts, window_counts) -> float:
    """Population stability index of two histograms (counts), smoothed so empty bins stay finite."""
    r, w = (_share(np.asarray(c, dtype=np.float64)) for c in (reference_counts, window_counts))
    return float(np.sum((w - r) * np.log(w / r)))


def _share(counts: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    share = counts / max(counts.sum(), 1.0) + floor
    return share / share.sum()


class DriftMonitor:
    """Rolling drift score over the last `window` frames; `update` returns the state dict."""

    def __init__(self, reference: dict, window: int = 200, threshold: float = 1.0):
        try:
            self.mean = np.asarray(reference["feature_mean"], dtype=np.float64)
            spread = np.asarray(reference["feature_std"], dtype=np.float64)
            self.ref_hist = np.asarray(reference["confidence_hist"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeclsError(
                f"manifest drift_reference is malformed ({exc}); re-export"
            ) from None
        if self.mean.shape != (len(FEATURES),) or self.ref_hist.shape != (CONF_BINS,):
            raise EdgeclsError("manifest drift_reference has the wrong shape; re-export")
        # a spread of ~0 (a set of near-identical images) would make any change infinite
        self.spread = np.maximum(spread, np.maximum(0.05 * np.abs(self.mean), 1e-3))
        self.window = window
        self.threshold = threshold
        self.features: deque[np.ndarray] = deque(maxlen=window)
        self.confidences: deque[float] = deque(maxlen=window)
        self.feature_sum = np.zeros(len(FEATURES))
        self.seen = 0
        self.state = {"state": "warming up", "score": 0.0, "psi": 0.0, "input_shift": 0.0}

    def update(self, model_input: np.ndarray, confidence: float) -> dict:
        f = image_features(model_input)
        if len(self.features) == self.window:
            self.feature_sum -= self.features[0]
        self.features.append(f)
        self.feature_sum += f
        self.confidences.append(confidence)
        self.seen += 1
        # a quarter of the window before the first score; then every 10 frames (cheap enough)
        if len(self.features) >= max(20, self.window // 4) and self.seen % 10 == 0:
            self.state = self.score()
        return self.state

    def score(self) -> dict:
        n = len(self.features)
        window = self.feature_sum / n
        z = np.abs(window - self.mean) / self.spread
        worst = int(z.argmax())
        p = psi(self.ref_hist, confidence_histogram(np.fromiter(self.confidences, float)))
        light = abs(math.log(max(window[:3].mean(), 1.0) / max(self.mean[:3].mean(), 1.0)))
        score = max(float(z[worst]) / SHIFT_SCALE, p / PSI_SCALE, light / LIGHT_SCALE)
        return {
            "state": "drift" if score >= self.threshold else "ok",
            "score": round(score if math.isfinite(score) else 1e9, 4),
            "psi": round(p, 4),
            "input_shift": round(float(z[worst]), 4),
            "brightness_ratio": round(math.exp(light), 3),
            "most_shifted": FEATURES[worst],
            "frames": n,
            "threshold": self.threshold,
        }
