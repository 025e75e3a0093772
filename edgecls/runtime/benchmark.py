"""`edgecls benchmark`: per artifact, size, load time, latency percentiles and FPS on this
machine, and accuracy when labelled data is given; all artifacts in one run, side by side."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgecls.runtime.backends import RuntimeOptions, load_predictor
from edgecls.runtime.bundle import load_bundle
from edgecls.runtime.select import measure_latency


def benchmark_bundle(
    bundle_dir: Path,
    data: Path | None = None,
    runs: int = 50,
    warmup: int = 5,
    options: RuntimeOptions = RuntimeOptions(),
) -> dict:
    bundle = load_bundle(bundle_dir)
    images = labels = None
    if data is not None:
        from edgecls.folders import load_eval_split
        from edgecls.runtime.preprocess import load_batch

        split, _ = load_eval_split(Path(data), bundle.labels)
        spec = bundle.input_spec
        images, labels = (
            load_batch(split.paths, (spec.height, spec.width)),
            np.asarray(split.labels),
        )
    rows = []
    for a in bundle.artifacts:
        path = bundle.verified_path(a, allow_failed=True)
        t0 = time.perf_counter()
        predictor = load_predictor(path, options)
        load_ms = (time.perf_counter() - t0) * 1000
        lat = measure_latency(predictor, runs=runs, warmup=warmup)
        row = {
            "file": a["file"],
            "format": a["format"],
            "precision": a["precision"],
            "bytes": a["bytes"],
            "parity_passed": a["parity"]["passed"],
            "runtime": predictor.description,
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
