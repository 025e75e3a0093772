"""Whether attributions mean anything: the deletion check and the pointing game."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DELETION_FRACTION = 0.10
BLUR_SIGMA = 8  # what a hidden pixel shows: the deletion check's and the kernel method's blur


def mask_for(image_path: Path) -> Path | None:
    """The ground-truth mask: the samples' DATA/masks/<split>/<class>/<stem>.png, or MVTec AD's
    CATEGORY/ground_truth/<defect>/<stem>_mask.png beside CATEGORY/test/<defect>/."""
    parts = image_path.resolve().parts
    if len(parts) < 4:
        return None
    root, split, label = Path(*parts[:-3]), parts[-3], parts[-2]
    for mask in (
        root / "masks" / split / label / f"{image_path.stem}.png",
        root / "ground_truth" / label / f"{image_path.stem}_mask.png",
    ):
        if mask.is_file():
            return mask
    return None


def deletion_check(predict, image: np.ndarray, attribution: np.ndarray, cls: int, rng) -> dict:
    """Probability of `cls` after replacing the top-attributed vs random 10% of pixels by a blur;
    `predict` is any model's (float pixel batch -> probabilities), an artifact's included."""
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)
    n = int(DELETION_FRACTION * attribution.size)
    top = np.argsort(attribution.ravel())[::-1][:n]
    variants = []
    for idx in [top] + [rng.choice(attribution.size, n, replace=False) for _ in range(3)]:
        mask = np.zeros(attribution.size, bool)
        mask[idx] = True
        mask = mask.reshape(attribution.shape)[..., None]
        variants.append(np.where(mask, blurred, image))
    probs = predict(np.stack([image, *variants]).astype(np.float32))[:, cls]
    return {
        "prob": float(probs[0]),
        "top_drop": float(probs[0] - probs[1]),
        "random_drop": float(np.mean(probs[0] - probs[2:])),
    }


def pointing_game(attribution: np.ndarray, mask_path: Path, size: tuple[int, int]) -> bool:
    """Whether the most attributed point (after a light smoothing) lies on the defect."""
    import cv2

    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # one-pixel tolerance
    y, x = peak(attribution)
    return bool(mask[y, x])


def peak(attribution: np.ndarray) -> tuple[int, int]:
    """(row, column) of the most attributed point after a light smoothing: the point the
    pointing game scores and a figure marks, so the two never disagree."""
    import cv2

    smooth = cv2.GaussianBlur(attribution.astype(np.float32), (0, 0), 1.0)
    y, x = np.unravel_index(np.argmax(smooth), smooth.shape)
    return int(y), int(x)
