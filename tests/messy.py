"""A messy image folder, as users have them: every broken and odd file a tracker reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BAD = {
    "truncated.png": "corrupt",
    "empty.jpg": "empty",
    "notes_as_image.jpg": "corrupt",
    "readme.txt": "not an image type",
}
ODD = ("cmyk.jpg", "rgba.png", "grey16.png", "upper.JPG", "grey.png", "photo.webp")


def _image(rng: np.random.Generator, label: int, size: int = 48) -> np.ndarray:
    """Class 0 dark with a bright square, class 1 bright with a dark square: easy to learn."""
    base = 60 if label == 0 else 190
    img = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    x, y = rng.integers(4, size - 20, 2)
    img[y : y + 14, x : x + 14] = 255 - base
    return img


def write_messy_folder(root: Path, n_per_class: int = 14) -> dict[str, list[Path]]:
    """DIR/{a,b}/: good JPEGs plus the odd-but-valid and the broken files; returns both lists."""
    rng = np.random.default_rng(0)
    odd, bad = [], []
    for label, name in enumerate(("a", "b")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(_image(rng, label)).save(folder / f"{name}_{i:03d}.jpg")
        img = _image(rng, label)
        Image.fromarray(img).convert("CMYK").save(folder / "cmyk.jpg")
        Image.fromarray(img).convert("RGBA").save(folder / "rgba.png")
        Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(folder / "grey16.png")
        Image.fromarray(img).save(folder / "upper.JPG", format="JPEG")
        Image.fromarray(img[..., 1]).save(folder / "grey.png")
        Image.fromarray(img).save(folder / "photo.webp")
        odd += [folder / n for n in ODD]
        Image.fromarray(img).save(folder / "full.png")
        data = (folder / "full.png").read_bytes()
        (folder / "full.png").unlink()
        (folder / "truncated.png").write_bytes(data[: len(data) // 2])
        (folder / "empty.jpg").write_bytes(b"")
        (folder / "notes_as_image.jpg").write_text("this is not a JPEG")
        (folder / "readme.txt").write_text("labels by hand")
        bad += [folder / n for n in BAD]
    (root / ".DS_Store").write_bytes(b"\0")
    return {"odd": odd, "bad": bad}
