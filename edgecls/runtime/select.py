"""Which artifact runs: among those that passed parity, ONNX on CUDA/TensorRT where present, else
the fastest by a short measured warm-up on this machine (cached per machine and bundle). int8
beats float32 on ARM boards but not on every x86 CPU, so it is measured, never assumed."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.runtime.backends import RuntimeOptions, load_predictor
from edgecls.runtime.bundle import Bundle

BACKEND_FORMATS = {"litert": "tflite", "onnxruntime": "onnx"}
CACHE = (
    Path(os.environ.get("EDGECLS_CACHE", Path.home() / ".cache" / "edgecls")) / "auto-backend.json"
)


@dataclass
class Choice:
    artifact: dict
    path: Path
    reason: str


def measure_latency(predictor, runs: int = 20, warmup: int = 3) -> np.ndarray:
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


def _cache_key(bundle: Bundle, options: RuntimeOptions) -> str:
    shas = "".join(a["sha256"] for a in bundle.artifacts)
    ident = "|".join(
        map(
            str,
            (
                platform.node(),
                platform.machine(),
                os.cpu_count(),
                options.num_threads,
                options.delegate,
                shas,
            ),
        )
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _gpu_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return [
        p
        for p in ort.get_available_providers()
        if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    ]


def choose(
    bundle: Bundle,
    backend: str = "auto",
    artifact: str | None = None,
    options: RuntimeOptions = RuntimeOptions(),
    allow_failed: bool = False,
    use_cache: bool = True,
) -> Choice:
    if artifact:
        a = bundle.artifact(artifact)
        return Choice(a, bundle.verified_path(a, allow_failed), "chosen with --artifact")
    if backend != "auto" and backend not in BACKEND_FORMATS:
        raise EdgeclsError(f"--backend {backend!r}: choose auto, {', '.join(BACKEND_FORMATS)}")
    if backend == "auto" and options.delegate != "auto":
        backend = "litert"  # delegates exist only for LiteRT
    candidates = [a for a in bundle.artifacts if allow_failed or a["parity"]["passed"]]
    if backend != "auto":
        candidates = [a for a in candidates if a["format"] == BACKEND_FORMATS[backend]]
    if not candidates:
        raise EdgeclsError(
            f"{bundle.root}: no artifact {'for ' + backend + ' ' if backend != 'auto' else ''}"
            "passed its parity gate; re-export, or pass --allow-failed"
        )
    gpu = _gpu_providers()
    onnx = [
        a for a in candidates if a["format"] == "onnx" and a["precision"] in ("float32", "float16")
    ]
    if gpu and onnx and backend in ("auto", "onnxruntime"):
        a = sorted(onnx, key=lambda a: a["precision"] != "float16")[0]
        return Choice(a, bundle.verified_path(a, allow_failed), f"ONNX Runtime on {gpu[0]}")
    paths = {a["file"]: bundle.verified_path(a, allow_failed) for a in candidates}
    if len(candidates) == 1:
        return Choice(candidates[0], paths[candidates[0]["file"]], "only eligible artifact")
    key = _cache_key(bundle, options)
    cache = json.loads(CACHE.read_text()) if use_cache and CACHE.is_file() else {}
    timings = cache.get(key)
    cached = timings is not None
    if not cached:
        timings = {}
        for a in candidates:
            timings[a["file"]] = float(
                np.median(measure_latency(load_predictor(paths[a["file"]], options)))
            )
        if use_cache:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            cache[key] = timings
            CACHE.write_text(json.dumps(cache, indent=1))
    eligible = {a["file"]: timings.get(a["file"], float("inf")) for a in candidates}
    best = min(candidates, key=lambda a: eligible[a["file"]])
    others = ", ".join(f"{f} {t:.2f} ms" for f, t in sorted(eligible.items(), key=lambda kv: kv[1]))
    return Choice(
        best,
        paths[best["file"]],
        f"fastest measured on this machine{' (cached)' if cached else ''}: {others}",
    )
