"""Which artifact runs: among those that passed parity, ONNX on TensorRT/CUDA where present (int8
first on TensorRT), else the fastest by a short measured warm-up on this machine (cached per
machine and bundle). int8 beats float32 on ARM boards but not on every x86 CPU, so it is
measured, never assumed."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import Predictor, RuntimeOptions, RuntimeUnavailable, import_runtime
from edgecls.bundle.folder import Bundle
from edgecls.bundle.formats import backend_formats
from edgecls.bundle.latency import latency_samples
from edgecls.bundle.manifest import Artifact
from edgecls.durable import write_json_atomic
from edgecls.errors import EdgeclsError

BACKEND_FORMATS = backend_formats()
CACHE_ENTRIES = 32  # bundles x settings remembered; the oldest measurement goes first


@dataclass
class Choice:
    artifact: Artifact
    predictor: Predictor  # loaded, checked against the manifest
    reason: str


def _cache_key(bundle: Bundle, options: RuntimeOptions) -> str:
    shas = "".join(a.sha256 for a in bundle.artifacts)
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
    ort, _ = import_runtime("onnxruntime")  # a broken one is said where its artifacts are skipped
    if ort is None:
        return []
    return [
        p
        for p in ort.get_available_providers()
        if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    ]


def _cache_path() -> Path:
    base = os.environ.get("EDGECLS_CACHE") or Path.home() / ".cache" / "edgecls"
    return Path(base) / "auto-backend.json"


def read_cache(log) -> dict:
    """The measured latencies; a missing, unreadable or corrupt cache (a full disk, a power cut)
    is a warning and a fresh measurement, never a failed start."""
    path = _cache_path()
    try:
        cache = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(f"warning: ignoring the backend cache {path} ({exc}); measuring again")
        return {}
    if not isinstance(cache, dict):
        log(f"warning: ignoring the backend cache {path} (not a JSON object); measuring again")
        return {}
    return cache


def write_cache(cache: dict, log) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache)
    except OSError as exc:
        log(
            f"warning: cannot write the backend cache {path} ({exc.strerror or exc}); the next "
            "start measures again (set EDGECLS_CACHE to a writable folder)"
        )


def _candidates(bundle: Bundle, backend: str, options, allow_failed: bool) -> list[Artifact]:
    if backend != "auto" and backend not in BACKEND_FORMATS:
        raise EdgeclsError(f"--backend {backend!r}: choose auto, {', '.join(BACKEND_FORMATS)}")
    if backend == "auto" and options.delegate != "auto":
        backend = "litert"  # delegates exist only for LiteRT
    candidates = [a for a in bundle.artifacts if allow_failed or a.passed]
    if backend != "auto":
        candidates = [a for a in candidates if a.format == BACKEND_FORMATS[backend]]
    if not candidates:
        raise EdgeclsError(
            f"{bundle.root}: no artifact {'for ' + backend + ' ' if backend != 'auto' else ''}"
            "passed its parity gate; re-export, or pass --allow-failed"
        )
    return candidates


def _gpu_choice(bundle, candidates, backend, options, allow_failed) -> Choice | None:
    """On a GPU board: a passing int8 ONNX when TensorRT is there and the int8 is the symmetric
    s8s8 QDQ it takes (TensorRT runs no other int8), else fp16/fp32 ONNX, on the best GPU
    provider."""
    gpu = _gpu_providers()
    if not gpu or backend not in ("auto", "onnxruntime"):
        return None
    rank = {"float16": 1, "float32": 2}
    calibration = bundle.manifest.calibration
    if gpu[0] == "TensorrtExecutionProvider" and calibration and calibration.onnx_int8 == "s8s8":
        rank.update({"int8": 0, "int8-mixed": 0})
    runs_here = BACKEND_FORMATS["onnxruntime"]  # the GPU providers are ONNX Runtime's
    onnx = [a for a in candidates if a.format == runs_here and a.precision in rank]
    if not onnx:
        return None
    a = min(onnx, key=lambda a: rank[a.precision])
    return Choice(a, bundle.load(a, options, allow_failed), f"ONNX Runtime on {gpu[0]}")


def choose(
    bundle: Bundle,
    backend: str = "auto",
    artifact: str | None = None,
    options: RuntimeOptions = RuntimeOptions(),
    allow_failed: bool = False,
    use_cache: bool = True,
    log=lambda msg: None,
) -> Choice:
    """The artifact to run, loaded and checked, and why it was chosen."""
    if artifact:
        a = bundle.artifact(artifact)
        return Choice(a, bundle.load(a, options, allow_failed), "chosen with --artifact")
    candidates = _candidates(bundle, backend, options, allow_failed)
    gpu = _gpu_choice(bundle, candidates, backend, options, allow_failed)
    if gpu is not None:
        return gpu
    predictors = _load_all(bundle, candidates, options, allow_failed, backend, log)
    candidates = [a for a in candidates if a.file in predictors]
    if len(candidates) == 1:
        a = candidates[0]
        return Choice(a, predictors[a.file], "only eligible artifact")
    key = _cache_key(bundle, options)
    cache = read_cache(log) if use_cache else {}
    timings = cache.get(key)
    cached = isinstance(timings, dict) and all(
        isinstance(timings.get(a.file), (int, float)) for a in candidates
    )
    if not cached:
        timings = {f: float(np.median(latency_samples(p))) for f, p in predictors.items()}
        if use_cache:
            kept = [k for k in cache if k != key][-(CACHE_ENTRIES - 1) :]
            write_cache({**{k: cache[k] for k in kept}, key: timings}, log)
    best = min(candidates, key=lambda a: timings[a.file])
    others = ", ".join(
        f"{a.file} {timings[a.file]:.2f} ms"
        for a in sorted(candidates, key=lambda a: timings[a.file])
    )
    return Choice(
        best,
        predictors[best.file],
        f"fastest measured on this machine{' (cached)' if cached else ''}: {others}",
    )


def _load_all(bundle, candidates, options, allow_failed, backend, log) -> dict[str, Predictor]:
    """Every candidate loaded. Under `auto`, a runtime that is missing or broken here is one
    warning and its artifacts are skipped while another runtime serves; only when none can is
    it an error, naming each runtime's problem and its fix."""
    predictors, unavailable = {}, {}
    for a in candidates:
        if a.format in unavailable:
            continue
        try:
            predictors[a.file] = bundle.load(a, options, allow_failed)
        except RuntimeUnavailable as exc:
            if backend != "auto":
                raise
            unavailable[a.format] = exc
    if not predictors and unavailable:
        problems = "; ".join(str(exc) for exc in unavailable.values())
        raise EdgeclsError(f"{bundle.root}: no runtime here can run its artifacts: {problems}")
    for fmt, exc in unavailable.items():
        skipped = ", ".join(a.file for a in candidates if a.format == fmt)
        log(
            f"warning: {exc.runtime} {exc.problem}: skipping {skipped}; running the other "
            f"artifacts (to use it: {exc.fix})"
        )
    return predictors
