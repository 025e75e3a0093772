"""Synthetic defects for training on good images only: the network learns to tell a good image
from the same image with one defect painted in, and where it is (the defect's mask).

Four kinds, one per image, with hard labels: blobs (holes, stains, dents in the light), thin
scratch lines, dark or bright, smudges (a local blur) and patches (a piece of the same image,
turned, pasted elsewhere). Measured (README, "Anomaly"): blobs and lines alone gave the casting
sample AUROC 0.999 and pointing 0.98, but a wood grain only 0.746 and 0.63, its smudges passing as
good; with smudges and patches too: casting 0.988 / 0.85, wood 0.987 / 0.95, a woven cloth 0.969
/ 0.88 -> 1.0 / 1.0. (Smudges and patches once moved the casting map's peak onto the rim, before
the defect cells were weighted in the loss: model.py.)"""

from __future__ import annotations

import cv2
import numpy as np


def _blob(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    bw, bh = (max(3, int(s * rng.uniform(0.05, 0.2))) for s in (w, h))
    cx, cy = (
        int(rng.integers(bw // 2, w - bw // 2 + 1)),
        int(rng.integers(bh // 2, h - bh // 2 + 1)),
    )
    mask = np.zeros((h, w), np.float32)
    angle = rng.uniform(0, 180)
    cv2.ellipse(mask, (cx, cy), (max(bw // 2, 2), max(bh // 2, 2)), angle, 0, 360, 1.0, -1)
    coloured = float(np.ptp(image, axis=2).mean()) > 2  # grey parts get grey defects
    kind = rng.integers(4 if coloured else 3)
    if kind == 0:  # a dark hole
        fill = np.full_like(image, rng.uniform(0, 60))
    elif kind == 1:  # darker
        fill = image * rng.uniform(0.3, 0.7)
    elif kind == 2:  # brighter
        fill = image * 1.3 + rng.uniform(30, 80)
    else:  # a stain of another colour
        fill = image * 0.5 + rng.uniform(0, 255, 3)
    soft = cv2.GaussianBlur(mask, (0, 0), 0.7)[..., None]
    return image * (1 - soft) + fill * soft, mask


def _line(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    size = min(h, w)
    start = rng.uniform(0.1, 0.9, 2) * (w, h)
    steps = rng.normal(0, 0.07 * size, (int(rng.integers(2, 6)), 2))
    points = np.clip(start + np.cumsum(steps, 0), 0, (w - 1, h - 1)).astype(np.int32)
    mask = np.zeros((h, w), np.float32)
    thickness = int(rng.integers(1, max(2, size // 48) + 1))
    cv2.polylines(mask, [points], False, 1.0, thickness)
    shade = rng.uniform(0, 60) if rng.random() < 0.6 else rng.uniform(180, 255)
    m = mask[..., None]
    return image * (1 - m) + shade * m, mask


def _smudge(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    r = max(2, int(min(h, w) * rng.uniform(0.06, 0.15)))
    cx, cy = int(rng.integers(r, w - r + 1)), int(rng.integers(r, h - r + 1))
    mask = np.zeros((h, w), np.float32)
    cv2.circle(mask, (cx, cy), r, 1.0, -1)
    blurred = cv2.GaussianBlur(image, (0, 0), rng.uniform(2, 4))
    soft = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
    return image * (1 - soft) + blurred * soft, mask


def _patch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    s = max(3, int(min(h, w) * rng.uniform(0.1, 0.25)))
    y0, x0, y1, x1 = (int(rng.integers(0, n - s + 1)) for n in (h, w, h, w))
    piece = np.rot90(image[y0 : y0 + s, x0 : x0 + s], int(rng.integers(1, 4)))
    out = image.copy()
    out[y1 : y1 + s, x1 : x1 + s] = piece * rng.uniform(0.9, 1.1)
    mask = np.zeros((h, w), np.float32)
    mask[y1 : y1 + s, x1 : x1 + s] = 1.0
    return out, mask


DEFECTS = (_blob, _line, _smudge, _patch)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A good image seen anew: flips, quarter turns, a little light."""
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if out.shape[0] == out.shape[1]:
        out = np.rot90(out, int(rng.integers(4)))
    return out * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)


def with_defect(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image with one synthetic defect, its 0/1 mask)."""
    out, mask = DEFECTS[int(rng.integers(len(DEFECTS)))](image.astype(np.float32), rng)
    return np.clip(out, 0, 255).astype(np.uint8), mask


def pairs(
    good: np.ndarray, rng: np.random.Generator, augmented: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each good image once as itself and once with a defect: (images uint8 (2N, H, W, 3),
    labels (2N,), masks (2N, H, W)), a good one's mask all zero."""
    n, h, w = good.shape[:3]
    images = np.empty((2 * n, h, w, 3), np.uint8)
    masks = np.zeros((2 * n, h, w), np.float32)
    for i, g in enumerate(good):
        seen = augment(g, rng) if augmented else g.astype(np.float32)
        images[2 * i] = np.clip(seen, 0, 255).astype(np.uint8)
        images[2 * i + 1], masks[2 * i + 1] = with_defect(seen, rng)
    labels = np.tile(np.array([0.0, 1.0], np.float32), n)
    return images, labels, masks


def with_defects(images: np.ndarray, seed: int) -> np.ndarray:
    """The images with every other one given a synthetic defect (a calibration set whose int8
    ranges hold the scores of defects as well as of good parts)."""
    rng, out = np.random.default_rng(seed), images.copy()
    for i in range(1, len(out), 2):
        out[i] = with_defect(out[i], rng)[0]
    return out
