"""Latency of artifacts on this machine: the board's artifact choice, `edgecls benchmark` and the
export's repair table all time inferences the same way."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import Predictor, load_predictor


def latency_samples(predictor: Predictor, runs: int = 20, warmup: int = 3) -> np.ndarray:
    """Milliseconds per single-image inference, after warm-up, on a fixed random image."""
    image = np.random.default_rng(0).integers(0, 256, (1, *predictor.input_size, 3), dtype=np.uint8)
    for _ in range(warmup):
        predictor.predict(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        predictor.predict(image)
        times.append((time.perf_counter() - t0) * 1000)
    return np.asarray(times)


def median_latencies(paths: dict[str, Path], rounds: int = 5, runs: int = 10) -> dict:
    """Median milliseconds per image of each artifact on this machine, rounds alternating
    between artifacts so a busy moment does not land on one of them."""
    predictors = {name: load_predictor(p) for name, p in paths.items()}
    times: dict[str, list] = {name: [] for name in paths}
    for i in range(rounds):
        for name, p in predictors.items():
            times[name].extend(latency_samples(p, runs=runs, warmup=3 if i == 0 else 0))
    return {name: round(float(np.median(t)), 3) for name, t in times.items()}
