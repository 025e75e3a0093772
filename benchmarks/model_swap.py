"""A candidate model beside the running one, measured side by side in one run: the active loop's
FPS while a candidate runs in shadow over its FPS alone (issue 36's target: >= 0.9), and the
longest gap between two records at the swap over the frame period (target: <= 2).

    python benchmarks/model_swap.py [--bundle export/NAME] [--artifact model_int8.tflite]
        [--rounds 4] [--seconds 8] [--json out.json]

One `edgecls run` (in this process) reads a local MJPEG camera in another process that plays a
quarter faster than the model, so the loop always has a new frame when it is ready, as on a line.
Windows alternate: the model alone, then a candidate in shadow (POST /deploy with a copy of the
bundle under another name, whose shadow never ends by itself), then `reject`, alone again, and so
on; each shadow window is compared with the alone windows on both sides (their geometric mean),
so a machine whose speed drifts cancels out. At the end an operator's `promote` swaps the last
candidate in, and the gap between the two records around the swap is taken from the JSON records'
arrival times. Without --bundle, the MobileNetV2 (224 px, int8 and float32 TFLite) bundle of
loop_overhead.py is made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from loop_overhead import camera, make_bundle, write_video  # noqa: E402
from mjpeg_server import free_port  # noqa: E402

from edgecls.bundle.backends import RuntimeOptions, load_predictor  # noqa: E402
from edgecls.bundle.latency import latency_samples  # noqa: E402
from edgecls.runtime.loop import run  # noqa: E402
from edgecls.runtime.loop_options import LoopOptions  # noqa: E402
from edgecls.runtime.sources import Source, SourceEnded, open_source  # noqa: E402


class Stamped:
    """The run's JSON records with their arrival times (monotonic)."""

    def __init__(self):
        self.rows, self.times = [], []

    def write(self, s):
        now = time.monotonic()
        for line in s.splitlines():
            self.rows.append(json.loads(line))
            self.times.append(now)

    def flush(self):
        pass

    def fps(self, start: float, end: float) -> float:
        n = sum(
            1
            for t, r in zip(self.times, self.rows, strict=True)
            if start <= t < end and r["type"] == "frame"
        )
        return n / (end - start)


class Until(Source):
    """The camera until `end` is set."""

    def __init__(self, source: Source, end: threading.Event):
        self.source, self.end = source, end
        self.name, self.live = source.name, source.live

    reconnects = property(lambda self: self.source.reconnects)
    dropped_frames = property(lambda self: self.source.dropped_frames)

    def read(self):
        if self.end.is_set():
            raise SourceEnded("done")
        return self.source.read()

    def close(self):
        self.source.close()


def candidate(bundle: Path, work: Path, n: int) -> Path:
    """A copy of the bundle under another name: another manifest, the same model."""
    out = work / f"candidate-{n}"
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["name"] = f"{manifest['name']}-candidate-{n}"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def deploy(port: int, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/deploy", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def latest(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/latest", timeout=10) as response:
        return json.loads(response.read())


def wait_for(what, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not get there in time")
        time.sleep(0.05)


def shadowing(port: int, name: str) -> bool:
    shadow = latest(port).get("shadow") or {}
    return (
        str(shadow.get("bundle", "")).startswith(f"{name}-")
        and shadow.get("frames", 0) > 0
        and shadow.get("state", "shadow") == "shadow"
    )


def windows(args, bundle: Path, work: Path, port: int, out: Stamped) -> list[dict]:
    """Alone, shadow, alone, ...: each shadow window with the alone windows around it."""
    rounds, alone = [], None
    time.sleep(args.seconds)  # the loop's own warm-up
    t = time.monotonic()
    time.sleep(args.seconds)
    alone = out.fps(t, time.monotonic())
    for n in range(args.rounds):
        cand = candidate(bundle, work, n)
        name = json.loads((cand / "manifest.json").read_text())["name"]
        deploy(port, {"path": str(cand)})
        wait_for(lambda name=name: shadowing(port, name))
        t = time.monotonic()
        time.sleep(args.seconds)
        shadow = out.fps(t, time.monotonic())
        frames = latest(port)["shadow"]["frames"]
        if n == args.rounds - 1:
            rounds.append({"alone_before": alone, "shadow": shadow, "shadow_frames": frames})
            return rounds
        deploy(port, {"action": "reject"})
        wait_for(lambda name=name: not shadowing(port, name))
        t = time.monotonic()
        time.sleep(args.seconds)
        after = out.fps(t, time.monotonic())
        rounds.append(
            {"alone_before": alone, "shadow": shadow, "alone_after": after, "shadow_frames": frames}
        )
        alone = after
    return rounds


def swap_gap(port: int, out: Stamped) -> dict:
    """Promote the candidate in shadow; the records' arrival gap where the bundle changes."""
    before = out.rows[-1]["bundle"]
    deploy(port, {"action": "promote"})
    wait_for(lambda: out.rows[-1]["bundle"] != before)
    time.sleep(1.0)
    frames = [(t, r) for t, r in zip(out.times, out.rows, strict=True) if r["type"] == "frame"]
    i = next(k for k, (_, r) in enumerate(frames) if r["bundle"] != before)
    times = np.array([t for t, _ in frames])
    period = float(np.median(np.diff(times[max(0, i - 200) : i])))
    gap = float(times[i] - times[i - 1])
    indices = [r["frame"] for _, r in frames]
    return {
        "gap_ms": round(gap * 1000, 2),
        "frame_period_ms": round(period * 1000, 2),
        "gap_over_period": round(gap / period, 2),
        # a camera's newest frame wins, so indices skip; none may repeat or go back
        "frames_increasing": bool(np.all(np.diff(indices) > 0)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--artifact", default="model_int8.tflite")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0, help="each window's length")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgecls-bench-swap-"))
    bundle = args.bundle or make_bundle(work)
    video = work / "frames.mp4"
    write_video(video, 64)
    predictor = load_predictor(bundle / args.artifact, RuntimeOptions(threads=args.threads))
    model_fps = 1000.0 / float(np.median(latency_samples(predictor, runs=100, warmup=10)))
    del predictor
    port, end, out, result = free_port(), threading.Event(), Stamped(), {}
    options = LoopOptions(
        bundle=bundle, artifact=args.artifact, threads=args.threads, headless=True, json=True,
        http=str(port), model_state=work / "state" / "model-state.json",
        shadow_frames=10**9, drift=False,
    )  # fmt: skip
    with camera(video, 1.25 * model_fps) as url:

        def drive():
            try:
                wait_for(lambda: len(out.rows) > 0, 120)
                result["rounds"] = windows(args, bundle, work, port, out)
                result["swap"] = swap_gap(port, out)
            finally:
                end.set()

        driver = threading.Thread(target=drive)
        driver.start()
        source = Until(open_source(url), end)
        summary = run(options.to_config(), out=out, log=lambda m: None, source=source)
        driver.join()
    ratios = [
        r["shadow"] / float(np.sqrt(r["alone_before"] * r.get("alone_after", r["alone_before"])))
        for r in result["rounds"]
    ]
    report = {
        "bundle": str(bundle),
        "artifact": args.artifact,
        "model_fps_alone": round(model_fps, 1),
        "loop_fps_alone_median": round(
            float(np.median([r["alone_before"] for r in result["rounds"]])), 1
        ),
        "loop_fps_shadow_median": round(
            float(np.median([r["shadow"] for r in result["rounds"]])), 1
        ),
        "shadow_ratio_median": round(float(np.median(ratios)), 3),
        "shadow_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "shadow_frames_per_window": [r["shadow_frames"] for r in result["rounds"]],
        "target_shadow_ratio": ">= 0.9",
        **{f"swap_{k}": v for k, v in result["swap"].items()},
        "target_gap_over_period": "<= 2",
        "classified": summary.classified,
    }
    width = max(map(len, report))
    for k, v in report.items():
        print(f"{k:>{width}}: {v}")
    if args.json:
        args.json.write_text(json.dumps({**report, "rounds": result["rounds"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
