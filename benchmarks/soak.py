"""Soak: does the loop run in constant memory, and does it survive a flaky camera?

    python benchmarks/soak.py [--bundle export/NAME] [--frames 100000] [--json out.json]

Two phases, each at least --frames classified frames, with the line outputs on (JSON records to
a rotating file, HTTP with a /metrics scraper, drift, MQTT to a local mosquitto when installed):

1. a video file, read in a loop (the file is re-opened at its end);
2. a local HTTP MJPEG stream (tests/mjpeg_server.py) that stalls or drops every few seconds.

It reports the process RSS after warm-up, in the middle and at the end of each phase (and 11
samples), the growth in bytes per frame after warm-up (target: below 1), the number of live
Python memory blocks (a leak of Python objects shows there whatever the allocator does with RSS),
the faults injected and the reconnects seen.
Without --bundle, a small CNN is trained for one epoch on the insect sample (64 px) and exported.
It runs under the environment device/edgecls.service gives `edgecls run` (MALLOC_ARENA_MAX=2; it
re-starts itself with it when unset), since that is what a board runs for months; the report says
which setting it measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from mjpeg_server import MjpegServer, free_port  # noqa: E402

from edgecls.runtime.loop import run  # noqa: E402
from edgecls.runtime.loop_options import LoopOptions  # noqa: E402
from edgecls.runtime.sources import LiveSource, Source, SourceEnded, open_source  # noqa: E402


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_bundle(work: Path) -> Path:
    from typer.testing import CliRunner

    from edgecls.cli import app
    from edgecls.samples import SampleSpec, write_sample
    from edgecls.train import TrainConfig, train
    from edgecls.train.models import ModelConfig

    data = work / "data"
    write_sample("insects", data, SampleSpec(n_train=60, n_test=30, size=96, seed=1))
    model = ModelConfig("seed-cnn", (64, 64))
    train(TrainConfig(data=data, out=work / "run", model=model, epochs=1, augment=False))
    out = work / "bundle"
    result = CliRunner().invoke(
        app, ["export", str(work / "run"), "--out", str(out), "--format", "tflite"]
    )
    assert result.exit_code == 0, result.output
    return out


class Meter:
    """Wraps a source: counts frames and samples RSS at fixed frame counts."""

    def __init__(self, source, frames: int, warmup: int):
        self.source, self.frames, self.warmup = source, frames, warmup
        self.name, self.live = source.name, source.live
        step = (frames - warmup) // 10
        self.marks = {warmup + i * step: None for i in range(10)} | {frames: None}
        self.n = 0
        self.blocks: dict[int, int] = {}

    @property
    def reconnects(self):
        return getattr(self.source, "reconnects", 0)

    @property
    def stop(self):
        return getattr(self.source, "stop", None)

    def read(self):
        frame = self.source.read()
        self.n += 1
        if self.n in self.marks:
            gc.collect()
            self.marks[self.n] = rss_bytes()
            self.blocks[self.n] = sys.getallocatedblocks()  # Python objects alive: a leak shows
        return frame

    def close(self):
        self.source.close()


class LoopedFile:
    """A video file read over and over: a file source that never ends."""

    live = False

    def __init__(self, path: Path):
        self.path, self.name, self.reconnects, self.fps = str(path), str(path), 0, 0.0
        self.source = open_source(self.path)
        self.offset = self.last = 0

    def read(self):
        try:
            frame = self.source.read()
        except SourceEnded:
            self.source.close()
            self.source = open_source(self.path)
            self.offset = self.last + 1
            frame = self.source.read()
        frame.index += self.offset
        self.last = frame.index
        return frame

    def close(self):
        self.source.close()


def scrape(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


def faults(cam: MjpegServer, every: float, stall: float, stop: threading.Event, log: list):
    """Every `every` seconds: a stall longer than the frame timeout, or a dropped connection."""
    i = 0
    while not stop.wait(every):
        if i % 2 == 0:
            cam.stall()
            log.append("stall")
            if stop.wait(stall):
                break
            cam.resume()
            cam.drop()  # the stalled connection is abandoned by the loop; end it here too
        else:
            cam.drop()
            log.append("drop")
        i += 1
    cam.resume()


def phase(name, source, args, work: Path, broker) -> dict:
    port = free_port()
    kw = {"http": str(port), "log_file": str(work / f"{name}.jsonl"), "log_max_mb": 5.0}
    if broker is not None:
        kw["mqtt"] = f"{broker.url}/soak"
    meter = Meter(source, args.frames + args.warmup, args.warmup)
    opts = LoopOptions(bundle=args.bundle, source=name, headless=True, max_frames=None, **kw)
    stop = threading.Event()
    threading.Thread(target=scrape, args=(port, stop), daemon=True).start()
    logs: collections.deque[str] = collections.deque(maxlen=50)  # bounded: we measure memory
    warnings = [0]

    def log(message: str) -> None:
        warnings[0] += "warning" in message
        logs.append(message)

    class Until(Source):  # ends the run once enough frames went through
        def __init__(self, m):
            self.m, self.name, self.live = m, m.name, m.live

        reconnects = property(lambda self: self.m.reconnects)
        stop = property(lambda self: self.m.stop)

        def read(self):
            if self.m.n >= self.m.frames:
                raise SourceEnded
            return self.m.read()

        def close(self):
            self.m.close()

    start = time.monotonic()
    try:
        summary = run(opts.to_config(), log=log, source=Until(meter))
    finally:
        stop.set()
    seconds = time.monotonic() - start
    marks = sorted((n, r) for n, r in meter.marks.items() if r is not None)
    (w, rw), (_, rm), (e, re_) = marks[0], marks[len(marks) // 2], marks[-1]
    slope = np.polyfit([n for n, _ in marks], [r for _, r in marks], 1)[0]
    return {
        "frames_read": meter.n,
        "classified": summary.classified,
        "seconds": round(seconds, 1),
        "rss_mb_after_warmup": round(rw / 2**20, 1),
        "rss_mb_middle": round(rm / 2**20, 1),
        "rss_mb_end": round(re_ / 2**20, 1),
        "growth_bytes_per_frame": round((re_ - rw) / (e - w), 3),
        "growth_bytes_per_frame_fit": round(float(slope), 3),  # least squares over 11 samples
        "rss_mb_samples": [round(r / 2**20, 2) for _, r in marks],
        "python_blocks_after_warmup": meter.blocks[w],
        "python_blocks_end": meter.blocks[e],
        "reconnects": summary.reconnects,
        "corrupt": summary.corrupt,
        "outputs_dropped": dict(summary.outputs_dropped),
        "output_errors": dict(summary.output_errors),
        "warnings": warnings[0],
    }


SERVICE_ENV = {"MALLOC_ARENA_MAX": "2"}  # as device/edgecls.service sets it


def main() -> int:
    if any(k not in os.environ for k in SERVICE_ENV):  # glibc reads it at process start only
        os.execve(sys.executable, [sys.executable, *sys.argv], {**SERVICE_ENV, **os.environ})
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--frames", type=int, default=100_000, help="frames measured after warm-up")
    ap.add_argument(
        "--warmup",
        type=int,
        default=50_000,
        help="frames before the measurement: RSS settles (malloc arenas, FFmpeg re-opens, worker "
        "threads) within ~50,000 frames, measured; growth is judged after that",
    )
    ap.add_argument("--fault-every", type=float, default=4.0, help="seconds between faults")
    ap.add_argument("--stall", type=float, default=2.0, help="seconds a stall lasts")
    ap.add_argument("--stream-fps", type=float, default=400.0)
    ap.add_argument("--phases", default="file,stream")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgecls-soak-"))
    args.bundle = args.bundle or make_bundle(work)
    images = [
        cv2.resize(cv2.GaussianBlur(np.random.default_rng(i).integers(0, 256, (96, 96, 3),
                   dtype=np.uint8), (0, 0), 2), (96, 96))
        for i in range(16)
    ]  # fmt: skip
    video = work / "soak.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (96, 96))
    for i in range(3000):  # long, so re-opening it (FFmpeg's own allocations) stays rare
        writer.write(images[i % len(images)])
    writer.release()
    from line_outputs import ensure_drift_reference

    ensure_drift_reference(args.bundle, video)  # drift on: its window is part of the memory
    broker = None
    with contextlib.suppress(RuntimeError, FileNotFoundError):
        from brokers import Mosquitto

        broker = Mosquitto(work / "broker").start()
    report = {"frames_per_phase": args.frames, "mqtt": broker is not None}
    report["environment"] = {k: os.environ[k] for k in SERVICE_ENV}
    try:
        if "file" in args.phases:
            report["file"] = phase(str(video), LoopedFile(video), args, work, broker)
            print("file:", json.dumps(report["file"]), flush=True)
        if "stream" in args.phases:
            report["stream"] = stream_phase(args, images, work, broker)
            print("stream:", json.dumps(report["stream"]), flush=True)
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def stream_phase(args, images, work: Path, broker) -> dict:
    injected: list[str] = []
    stop = threading.Event()
    with MjpegServer(images, fps=args.stream_fps) as cam:
        source = LiveSource(
            cam.url,
            lambda: cv2.VideoCapture(cam.url, cv2.CAP_FFMPEG),
            frame_timeout=1.0,
            max_backoff=1.0,
            log=lambda m: None,
        )
        threading.Thread(
            target=faults, args=(cam, args.fault_every, args.stall, stop, injected), daemon=True
        ).start()
        try:
            result = phase(cam.url, source, args, work, broker)
        finally:
            stop.set()
    result["faults_injected"] = {k: injected.count(k) for k in ("stall", "drop")}
    return result


if __name__ == "__main__":
    sys.exit(main())
