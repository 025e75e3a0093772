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

import numpy as np

from edgecls.bundle.drift import CONF_BINS, FEATURES, confidence_histogram, image_features, psi
from edgecls.errors import EdgeclsError

SHIFT_SCALE, PSI_SCALE = 3.0, 0.25
# A scene 1.6x darker or brighter than the reference on average: a lighting change. Measured as a
# ratio, because a reference of many kinds of parts spreads its per-image brightness too widely
# for a shift in spreads to see even a 2x darker scene.
LIGHT_SCALE = math.log(1.6)


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
