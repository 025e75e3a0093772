"""The camera loop's overhead, measured side by side in one run: how much of the model's speed the
loop keeps, from a video file and from a live local MJPEG camera (640x480), with the frame work
overlapped with inference (on the source's thread) and in series with it (on the loop's thread,
as it was); and what `auto` picks against every candidate's real loop.

    python benchmarks/loop_overhead.py [--bundle export/NAME] [--frames 600] [--json out.json]

The candidates are the bundle's TFLite artifacts at all cores and all but one (at all cores also
with the frame work in series); `auto` measures them with its probe (runtime/loop_probe.py), and
this benchmark runs each through the real loop on the video, so the choice can be checked. For
auto's artifact at each thread count it then measures, in rounds that alternate: the model alone
(median latency at the same threads), the loop over the video and over a camera in another
process playing it a quarter faster than the model, overlapped and serial. Loop FPS / model FPS
is the median of the rounds, its range beside it. Without --bundle, a MobileNetV2 (224 px,
random weights: the speed does not depend on them) is trained for one epoch on the casting
sample and exported --int8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests")]

from edgecls.bundle.backends import RuntimeOptions, load_predictor  # noqa: E402
from edgecls.bundle.folder import load_bundle  # noqa: E402
from edgecls.bundle.latency import latency_samples  # noqa: E402
from edgecls.runtime.loop import LoopConfig, _probe, frame_work, run  # noqa: E402
from edgecls.runtime.select import candidate_runs, choose, thread_counts  # noqa: E402
from edgecls.runtime.sources import Source, open_source  # noqa: E402


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


class Serial(Source):
    """The loop as it was: the source keeps no `prepare`, so the loop does the frame work itself,
    in series with the model (a file is still decoded ahead, as it was)."""

    def __init__(self, source: Source):
        self._source = source
        self.name, self.live, self.stop = source.name, source.live, source.stop

    prepare = property(lambda self: None, lambda self, value: None)
    reconnects = property(lambda self: self._source.reconnects)
    dropped_frames = property(lambda self: self._source.dropped_frames)

    def read(self):
        return self._source.read()

    def close(self) -> None:
        self._source.close()


def loop_fps(bundle: Path, source: str, artifact: str, threads: int, serial=False, frames=None):
    config = LoopConfig(
        bundle, source, artifact=artifact, runtime=RuntimeOptions(threads=threads),
        headless=True, max_frames=frames,
    )  # fmt: skip
    opened = open_source(source)
    summary = run(config, log=lambda m: None, source=Serial(opened) if serial else opened)
    return summary.classified / summary.seconds


def candidates(bundle: Path, video: Path) -> tuple[dict, str]:
    """Every candidate's real loop FPS over the video, and what auto picks (measured afresh)."""
    b = load_bundle(bundle)
    probe = _probe(LoopConfig(bundle, str(video), headless=True), frame_work(b, None))
    tflite = [a for a in b.artifacts if a.format == "tflite" and a.passed]
    real = {
        c.key: loop_fps(bundle, str(video), c.artifact.file, c.threads, not c.overlap)
        for c in candidate_runs(tflite, RuntimeOptions())
    }
    choice = choose(b, backend="litert", use_cache=False, probe=probe)
    auto = f"{choice.artifact.file} x{choice.threads}" + ("" if choice.overlap else " serial")
    return real, auto


CAMERA = """
import sys, cv2
sys.path.insert(0, {tests!r})
from mjpeg_server import MjpegServer
cap = cv2.VideoCapture({video!r})
frames = [cap.read()[1] for _ in range(8)]
with MjpegServer(frames, fps={fps}) as cam:
    print(cam.url, flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def camera(video: Path, fps: float):
    """A local MJPEG camera in a process of its own (a real one is another device)."""
    code = CAMERA.format(tests=str(HERE.parent / "tests"), video=str(video), fps=fps)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield child.stdout.readline().strip()
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def measure_round(bundle, artifact, threads, video, frames) -> dict:
    predictor = load_predictor(bundle / artifact, RuntimeOptions(threads=threads))
    model_fps = 1000.0 / float(np.median(latency_samples(predictor, runs=200, warmup=10)))
    row = {"model_fps": model_fps}
    for mode in ("overlapped", "serial"):
        row[f"file_{mode}"] = loop_fps(bundle, str(video), artifact, threads, mode == "serial")
    # a camera a quarter faster than the model: the loop has a new frame whenever it is ready
    with camera(video, 1.25 * model_fps) as url:
        for mode in ("overlapped", "serial"):
            fps = loop_fps(bundle, url, artifact, threads, mode == "serial", frames)
            row[f"camera_{mode}"] = fps
    return {k: v / model_fps if k != "model_fps" else v for k, v in row.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgecls-bench-"))
    bundle = args.bundle or make_bundle(work)
    video = work / "frames.mp4"
    write_video(video, args.frames)
    real, auto = candidates(bundle, video)
    best = max(real, key=real.get)
    for key, fps in sorted(real.items(), key=lambda kv: -kv[1]):
        print(f"candidate {key:<28} loop {fps:6.1f} FPS{'  <- auto' if key == auto else ''}")
    artifact = auto.split(" x")[0]  # at every thread count, overlapped and serial
    counts = thread_counts(RuntimeOptions())
    rounds = {t: [] for t in counts}
    for _ in range(args.rounds):  # alternating within each round: a shared machine drifts
        for t in counts:
            rounds[t].append(measure_round(bundle, artifact, t, video, args.frames))
    report = {
        "bundle": str(bundle),
        "rounds": args.rounds,
        "frames": "640x480",
        "candidates_loop_fps": {k: round(v, 1) for k, v in real.items()},
        "auto_choice": auto,
        "auto_loop_over_best_loop": round(real[auto] / real[best], 3),
    }
    for t, rows in rounds.items():
        for key in rows[0]:
            values = [r[key] for r in rows]
            report[f"x{t}_{key}"] = round(float(np.median(values)), 3)
            report[f"x{t}_{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    width = max(map(len, report))
    for k, v in report.items():
        print(f"{k:>{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
