"""Drift reference statistics: per-image input features (channel means and spreads, sharpness),
the confidence histogram and the class mix of a set of model inputs, as the export stores them in
the manifest (`drift_reference`) and the board's drift monitor (runtime/drift.py) measures its
frames; both sides compute the features with the same function."""

from __future__ import annotations

import cv2
import numpy as np

VERSION = 1
CONF_BINS = 10
FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "sharpness")


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
