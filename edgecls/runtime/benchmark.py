"""`edgecls benchmark`: per artifact, size, load time, latency percentiles and FPS on this
machine, and accuracy when labelled data is given; all artifacts in one run, side by side."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import RuntimeOptions
from edgecls.bundle.folder import load_bundle
from edgecls.bundle.latency import latency_samples
from edgecls.errors import EdgeclsError


def benchmark_bundle(
    bundle_dir: Path,
    data: Path | None = None,
    runs: int = 50,
    warmup: int = 5,
    options: RuntimeOptions = RuntimeOptions(),
) -> dict:
    bundle = load_bundle(bundle_dir)
    images = labels = None
    if runs < 1 or warmup < 0:
        raise EdgeclsError(f"--runs {runs}: must be at least 1")
    if data is not None:
        from edgecls.runtime.parity_check import eval_split

        split, _ = eval_split(bundle, Path(data))
        images, labels = bundle.input_spec.load_batch(split.paths), np.asarray(split.labels)
    rows = []
    for a in bundle.artifacts:
        t0 = time.perf_counter()
        predictor = bundle.load(a, options, allow_failed=True)
        load_ms = (time.perf_counter() - t0) * 1000
        lat = latency_samples(predictor, runs=runs, warmup=warmup)
        row = {
            "file": a.file,
            "format": a.format,
            "precision": a.precision,
            "bytes": a.bytes,
            "parity_passed": a.passed,
            "runtime": predictor.description,
            "warnings": list(predictor.warnings),  # e.g. a delegate that fell back to the CPU
            "load_ms": round(load_ms, 2),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 3) for q in (50, 90, 99)},
            "fps": round(1000.0 / float(np.median(lat)), 1),
        }
        if images is not None:
            row["accuracy"] = float((predictor.predict(images).argmax(1) == labels).mean())
        rows.append(row)
    return {
        "bundle": str(bundle_dir),
        "runs": runs,
        "threads": options.num_threads,
        "artifacts": rows,
    }
