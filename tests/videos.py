"""Videos written by the tests from known images, as a camera would deliver them (BGR)."""

from __future__ import annotations

from pathlib import Path

import cv2


def write_video(
    path: Path,
    images: list[Path],
    repeat: int = 1,
    size: tuple[int, int] | None = None,
    fps: float = 10.0,
) -> int:
    """Each image `repeat` times, in order; returns the number of frames written."""
    first = cv2.imread(str(images[0]))
    h, w = size or first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    n = 0
    for p in images:
        frame = cv2.resize(cv2.imread(str(p)), (w, h), interpolation=cv2.INTER_AREA)
        for _ in range(repeat):
            writer.write(frame)
            n += 1
    writer.release()
    return n
