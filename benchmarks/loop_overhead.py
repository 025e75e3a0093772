"""The camera loop's overhead, and int8 against float32, measured side by side in one run.

    python benchmarks/loop_overhead.py [--bundle export/NAME] [--frames 600] [--json out.json]

For the bundle's int8 TFLite model: model latency (median, after warm-up), the loop's FPS over a
640x480 video (decode, BGR->RGB, resize, inference, bookkeeping), and the ratio of loop FPS to
1 / latency: how much of the model's speed the loop keeps. The video alone is also read, to show
the source is faster than the model. Without --bundle, a MobileNetV2 (224 px, random weights: the
speed does not depend on them) is trained for one epoch on the casting sample and exported --int8.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgecls.bundle.backends import RuntimeOptions, load_predictor
from edgecls.bundle.latency import latency_samples
from edgecls.runtime.loop import LoopConfig, run
from edgecls.runtime.sources import SourceEnded, open_source


def make_bundle(work: Path) -> Path:
    from edgecls.export import ExportConfig, export_bundle
    from edgecls.samples import SampleSpec, write_sample
    from edgecls.train import TrainConfig, train
    from edgecls.train.models import ModelConfig

    data = work / "data"
    write_sample("casting", data, SampleSpec(n_train=60, n_test=30, size=224))
    model = ModelConfig("mobilenet-v2", (224, 224), weights="none")
    train(TrainConfig(data=data, out=work / "run", model=model, epochs=1, augment=False))
    return export_bundle(
        ExportConfig(
            work / "run",
            out=work / "bundle",
            precisions=("float32", "int8"),
            formats=("tflite",),
            calibration_size=100,
        )
    ).out


def write_video(path: Path, frames: int, size=(640, 480)) -> None:
    rng = np.random.default_rng(0)
    base = [
        cv2.GaussianBlur(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), (0, 0), 3)
        for _ in range(8)
    ]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for i in range(frames):
        writer.write(base[i % len(base)])
    writer.release()


def source_fps(video: Path) -> float:
    source = open_source(str(video))
    n, t0 = 0, time.perf_counter()
    try:
        while True:
            source.read()
            n += 1
    except SourceEnded:
        pass
    finally:
        source.close()
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, help="inference threads; default all cores")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgecls-bench-"))
    bundle = args.bundle or make_bundle(work)
    options = RuntimeOptions(threads=args.threads)
    video = work / "frames.mp4"
    write_video(video, args.frames)

    predictors = {
        p: load_predictor(bundle / f"model_{p}.tflite", options) for p in ("int8", "float32")
    }
    rounds = []
    for _ in range(args.rounds):  # alternate the measurements: a shared machine drifts
        lat = {
            p: float(np.median(latency_samples(pred, runs=args.runs, warmup=10)))
            for p, pred in predictors.items()
        }
        config = LoopConfig(
            bundle, str(video), artifact="model_int8.tflite", runtime=options, headless=True
        )
        summary = run(config, log=lambda m: None)
        loop_fps = summary.classified / summary.seconds
        rounds.append(
            {
                "int8_ms": lat["int8"],
                "float32_ms": lat["float32"],
                "loop_fps": loop_fps,
                "ratio": loop_fps * lat["int8"] / 1000.0,
                "int8_over_float32": lat["int8"] / lat["float32"],
            }
        )

    def med(key):
        return round(float(np.median([r[key] for r in rounds])), 3)

    def spread(key):
        return [round(min(r[key] for r in rounds), 3), round(max(r[key] for r in rounds), 3)]

    report = {
        "bundle": str(bundle),
        "threads": options.num_threads,
        "rounds": args.rounds,
        "frames_per_round": summary.classified,
        "video": "640x480 mp4v",
        "source_fps": round(source_fps(video), 1),
        "int8_latency_ms": med("int8_ms"),
        "float32_latency_ms": med("float32_ms"),
        "model_fps_int8": round(1000.0 / med("int8_ms"), 1),
        "loop_fps_int8": round(med("loop_fps"), 1),
        "loop_fps_over_model_fps": med("ratio"),
        "loop_fps_over_model_fps_range": spread("ratio"),
        "int8_over_float32_latency": med("int8_over_float32"),
        "int8_over_float32_latency_range": spread("int8_over_float32"),
    }
    width = max(map(len, report))
    for k, v in report.items():
        print(f"{k:>{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
