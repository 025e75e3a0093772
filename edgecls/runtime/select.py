"""Which artifact runs: among those that passed parity, ONNX on TensorRT/CUDA where present (int8
first on TensorRT), else the artifact and inference thread count whose loop is the fastest
measured on this machine for this source's frames (loop_probe.py; cached per machine, bundle
and frame size). int8 beats float32 on ARM boards but not on every x86 CPU, and all cores for
the model can lose to all but one when the frame work needs a core: measured, never assumed."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import Predictor, RuntimeOptions, RuntimeUnavailable, import_runtime
from edgecls.bundle.folder import Bundle
from edgecls.bundle.formats import backend_formats
from edgecls.bundle.manifest import Artifact
from edgecls.durable import write_json_atomic
from edgecls.errors import EdgeclsError
from edgecls.runtime.loop_probe import NOMINAL_SIZE, loop_fps, probe_frame

BACKEND_FORMATS = backend_formats()
CACHE_ENTRIES = 32  # bundles x settings remembered; the oldest measurement goes first
PROBE_ROUNDS, PROBE_SECONDS = 2, 0.2  # per candidate, once per machine, bundle and frame size


@dataclass
class Choice:
    artifact: Artifact
    predictor: Predictor  # loaded, checked against the manifest
    reason: str
    threads: int | None = None  # the inference threads auto chose; None: as asked
    overlap: bool = True  # the frame work on the source's thread, beside the model


def _cache_key(bundle: Bundle, options: RuntimeOptions, probe: Probe) -> str:
    shas = "".join(a.sha256 for a in bundle.artifacts)
    ident = "|".join(
        map(
            str,
            (
                "loop",
                platform.node(),
                platform.machine(),
                os.cpu_count(),
                options.threads,
                options.delegate,
                probe.frame_size,
                probe.roi,
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
    probe: Probe | None = None,
) -> Choice:
    """The artifact to run, loaded and checked, and why it was chosen."""
    if artifact:
        a = bundle.artifact(artifact)
        return Choice(a, bundle.load(a, options, allow_failed), "chosen with --artifact")
    candidates = _candidates(bundle, backend, options, allow_failed)
    gpu = _gpu_choice(bundle, candidates, backend, options, allow_failed)
    if gpu is not None:
        return gpu
    probe = probe or Probe(NOMINAL_SIZE, bundle.input_spec.frame_to_input)
    runs = candidate_runs(candidates, options)
    if len(runs) == 1:
        c = runs[0]
        return Choice(c.artifact, c.load(bundle, options, allow_failed), "only eligible artifact")
    key = _cache_key(bundle, options, probe)
    cache = read_cache(log) if use_cache else {}
    fps, best, predictor = _cached(cache.get(key), runs, bundle, options, allow_failed)
    cached = best is not None
    if not cached:
        fps, predictors = _measure(bundle, runs, options, allow_failed, backend, probe, log)
        best = max((c for c in runs if c.loaded in predictors), key=lambda c: fps[c.key])
        predictor = predictors[best.loaded]
        if use_cache:
            kept = [k for k in cache if k != key][-(CACHE_ENTRIES - 1) :]
            write_cache({**{k: cache[k] for k in kept}, key: fps}, log)
    measured = sorted((c for c in runs if fps.get(c.key)), key=lambda c: -fps[c.key])
    others = ", ".join(f"{c.key} {fps[c.key]:.0f} FPS" for c in measured)
    w, h = probe.frame_size
    return Choice(
        best.artifact,
        predictor,
        f"fastest loop measured on this machine for {w}x{h} frames"
        f"{' (cached)' if cached else ''}: {others}",
        best.threads,
        best.overlap,
    )


@dataclass(frozen=True)
class Probe:
    """What the loop will do per frame: the source's frame size and the frame work."""

    frame_size: tuple[int, int]  # width, height
    prepare: Callable[[np.ndarray], np.ndarray]
    roi: tuple[int, int, int, int] | None = None  # part of the frame work; in the cache key


@dataclass(frozen=True)
class Candidate:
    """An artifact at an inference thread count, with the frame work beside the model or (where
    the model takes every core) between its runs."""

    artifact: Artifact
    threads: int
    overlap: bool = True

    @property
    def loaded(self) -> str:
        return f"{self.artifact.file} x{self.threads}"

    @property
    def key(self) -> str:
        return self.loaded + ("" if self.overlap else " serial")

    def load(self, bundle: Bundle, options: RuntimeOptions, allow_failed: bool) -> Predictor:
        return bundle.load(self.artifact, replace(options, threads=self.threads), allow_failed)


def candidate_runs(artifacts: list[Artifact], options: RuntimeOptions) -> list[Candidate]:
    """Each artifact at each thread count; at all cores also with the frame work kept off the
    model's cores, where overlapping it can only take them from the model."""
    cores = os.cpu_count() or 1
    return [
        Candidate(a, t, overlap)
        for a in artifacts
        for t in thread_counts(options)
        for overlap in ((True, False) if t >= cores else (True,))
    ]


def thread_counts(options: RuntimeOptions) -> list[int]:
    """All cores, and all but one (left to the frame work); --threads fixes the count."""
    if options.threads is not None:
        return [options.threads]
    cores = os.cpu_count() or 1
    return [cores, cores - 1] if cores > 1 else [1]


def _cached(fps, runs: list[Candidate], bundle, options, allow_failed):
    """The cached measurement's best, loaded; (None, None, None) to measure again: no entry, a
    candidate it lacks (a runtime installed since), or the best no longer loads here. A
    candidate whose runtime was missing is cached as null."""
    valid = isinstance(fps, dict) and all(
        c.key in fps and (fps[c.key] is None or isinstance(fps[c.key], (int, float))) for c in runs
    )
    measured = [c for c in runs if valid and fps[c.key]]
    if not measured:
        return None, None, None
    best = max(measured, key=lambda c: fps[c.key])
    try:
        return fps, best, best.load(bundle, options, allow_failed)
    except RuntimeUnavailable:
        return None, None, None


def _measure(bundle, runs, options, allow_failed, backend, probe, log):
    """Each candidate's loop FPS, rounds alternating so that a busy moment of a shared machine
    does not land on one of them; the best round counts (load only ever slows a loop down)."""
    predictors = _load_all(bundle, runs, options, allow_failed, backend, log)
    jpeg = probe_frame(probe.frame_size)
    fps = {c.key: None for c in runs}
    for _ in range(PROBE_ROUNDS):
        for c in (c for c in runs if c.loaded in predictors):
            measured = loop_fps(predictors[c.loaded], probe.prepare, jpeg, PROBE_SECONDS, c.overlap)
            fps[c.key] = max(fps[c.key] or 0.0, measured)
    return fps, predictors


def _load_all(bundle, runs, options, allow_failed, backend, log) -> dict[str, Predictor]:
    """Every candidate loaded. Under `auto`, a runtime that is missing or broken here is one
    warning and its artifacts are skipped while another runtime serves; only when none can is
    it an error, naming each runtime's problem and its fix."""
    predictors, unavailable = {}, {}
    for c in runs:
        if c.artifact.format in unavailable or c.loaded in predictors:
            continue
        try:
            predictors[c.loaded] = c.load(bundle, options, allow_failed)
        except RuntimeUnavailable as exc:
            if backend != "auto":
                raise
            unavailable[c.artifact.format] = exc
    if not predictors and unavailable:
        problems = "; ".join(str(exc) for exc in unavailable.values())
        raise EdgeclsError(f"{bundle.root}: no runtime here can run its artifacts: {problems}")
    for fmt, exc in unavailable.items():
        skipped = ", ".join(sorted({c.artifact.file for c in runs if c.artifact.format == fmt}))
        log(
            f"warning: {exc.runtime} {exc.problem}: skipping {skipped}; running the other "
            f"artifacts (to use it: {exc.fix})"
        )
    return predictors
