"""What the loop achieves with an artifact at a thread count, measured in the loop's own shape:
a source thread decodes a JPEG frame of the source's size, and prepares the model's input while
the model works on the one before (or leaves that to the loop's thread, between two runs of the
model). The model alone is not the answer: on a board with few cores its threads and the frame
work compete, so fewer inference threads, a slower model that leaves a core free, or the frame
work kept off the model's cores can make the faster loop."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from edgecls.bundle.backends import Predictor

NOMINAL_SIZE = (640, 480)  # width, height: where the source does not say before it opens
WARMUP_FRAMES = 3


def probe_frame(size: tuple[int, int]) -> bytes:
    """A camera-like JPEG (smooth noise decodes at a realistic cost; flat grey would not)."""
    w, h = size
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (0, 0), 3)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def loop_fps(
    predictor: Predictor,
    prepare: Callable[[np.ndarray], np.ndarray],
    jpeg: bytes,
    seconds: float,
    overlap: bool = True,
) -> float:
    """Frames per second through decode (a thread, two frames ahead), the frame work (on that
    thread when `overlap`, else before the model on the loop's) and the model."""
    data = np.frombuffer(jpeg, np.uint8)
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    ahead = prepare if overlap else (lambda image: image)
    after = (lambda x: x) if overlap else prepare

    def frames() -> None:
        while not stop.is_set():
            try:
                x = ahead(cv2.imdecode(data, cv2.IMREAD_COLOR))
            except Exception as exc:  # handed to the measuring thread, raised there
                x = exc
            while not stop.is_set():
                try:
                    ready.put(x, timeout=0.05)
                    break
                except queue.Full:
                    continue

    def model_input() -> np.ndarray:
        x = ready.get(timeout=10)
        if isinstance(x, Exception):
            raise x
        return after(x)[None]

    worker = threading.Thread(target=frames, daemon=True, name="loop probe")
    worker.start()
    try:
        for _ in range(WARMUP_FRAMES):
            predictor.predict(model_input())
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or n < WARMUP_FRAMES:
            predictor.predict(model_input())
            n += 1
    finally:
        stop.set()
        worker.join()
    return n / elapsed
