"""What the line outputs cost the loop: FPS with MQTT + HTTP (a live viewer and a /metrics
poller connected) + drift on, over FPS with no outputs, measured in one run, alternating rounds.

    python benchmarks/line_outputs.py [--bundle export/NAME] [--frames 3000] [--rounds 10]

Besides wall-clock FPS, it reports the process's CPU time per frame (all threads; the broker is
another process), a figure that a busy shared machine disturbs much less than FPS; the FPS ratio
is (bare CPU per frame) / (full CPU per frame) when the loop is CPU-bound. The MQTT client's own
process is reported apart: its CPU per frame is what a board pays per record at any frame rate.

The source is a 640x480 video file, so the loop runs as fast as the model allows and every
output has to keep up (from a file the loop waits for its outputs rather than dropping, so any
cost shows in the FPS). Without --bundle, the MobileNetV2 int8 bundle of loop_overhead.py is
made. A local mosquitto receives the records and keeps them for a subscriber with a persistent
session, which collects and counts them after the rounds (a PLC or dashboard is another machine:
its CPU is not the board's). A viewer watches the live view and a poller scrapes /metrics, in a
process of their own started once for the whole benchmark. Rounds are a few seconds long, so what
is measured is the steady state a board runs in for months (start-up is outside the timed loop
anyway). The target is >= 0.95.

A shared machine's speed wanders by 10-20 % over tens of seconds, so rounds go bare, full, bare,
full, ..., bare, and each full round is compared with the bare rounds on both sides of it (their
geometric mean): a drift in speed that is steady across the three cancels out, and the median over
rounds sets aside the rounds in which the machine jumped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from brokers import Mosquitto, Subscriber  # noqa: E402
from loop_overhead import make_bundle, write_video  # noqa: E402
from mjpeg_server import free_port  # noqa: E402

from edgecls.runtime.loop import run  # noqa: E402
from edgecls.runtime.runconfig import RunOptions  # noqa: E402


def ensure_drift_reference(bundle: Path, video: Path) -> None:
    """Bundles exported before drift references existed get one from the video's frames (the
    figures do not matter for speed, only that the monitor runs)."""
    import cv2

    from edgecls.runtime.backends import load_predictor
    from edgecls.runtime.bundle import load_bundle
    from edgecls.runtime.drift import reference_stats

    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest.get("drift_reference"):
        return
    spec = load_bundle(bundle).input_spec
    cap, frames = cv2.VideoCapture(str(video)), []
    while len(frames) < 64:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(spec.frame_to_input(frame))
    x = np.stack(frames)
    probs = load_predictor(bundle / "model_float32.tflite").predict(x)
    manifest["drift_reference"] = reference_stats(x, probs, manifest["labels"])
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


VIEWERS = r"""
import sys, threading, time, urllib.request
base = sys.argv[1]
def watch():
    while True:
        try:
            with urllib.request.urlopen(base + "/", timeout=5) as r:
                while r.read(65536):
                    pass
        except OSError:
            time.sleep(0.05)
def scrape():
    while True:
        time.sleep(1.0)
        try:
            urllib.request.urlopen(base + "/metrics", timeout=5).read()
        except OSError:
            pass
threading.Thread(target=watch, daemon=True).start()
scrape()
"""


COUNTER = "bench-counter"


def viewers(port: int) -> subprocess.Popen:
    """A person watching the live view and Prometheus scraping /metrics every second; between
    rounds (no server) they retry, as a browser tab would."""
    return subprocess.Popen([sys.executable, "-c", VIEWERS, f"http://127.0.0.1:{port}"])


def one_round(bundle, video, artifact, threads, broker, port: int | None) -> dict:
    if port is not None:
        kw = {"mqtt": f"{broker.url}/bench", "http": str(port), "drift": True}
    else:
        kw = {"drift": False}
    opts = RunOptions(
        bundle=bundle, source=str(video), artifact=artifact, threads=threads, headless=True, **kw
    )
    cpu, children = time.process_time(), _children_cpu()
    summary = run(opts.to_config(), log=lambda m: None)
    n = summary.classified
    return {
        "fps": n / summary.seconds,
        "cpu_ms_per_frame": (time.process_time() - cpu) * 1000 / n,
        "mqtt_client_cpu_ms_per_frame": (_children_cpu() - children) * 1000 / n,
        "classified": summary.classified,
        "dropped": dict(summary.outputs_dropped),
        "drift": summary.drift.get("state"),
    }


def _children_cpu() -> float:
    """CPU of the child processes that ended: the run's MQTT client, once its run has closed it
    (the broker and the viewers end only after the rounds)."""
    t = os.times()
    return t.children_user + t.children_system


def med(values) -> float:
    return round(float(np.median(values)), 3)


def measure(args, bundle: Path, video: Path, broker, port: int) -> list[dict]:
    def bare():
        return one_round(bundle, video, args.artifact, args.threads, broker, None)

    one_round(bundle, video, args.artifact, args.threads, broker, port)  # warm-up
    rounds, before = [], bare()
    for _ in range(args.rounds):
        full = one_round(bundle, video, args.artifact, args.threads, broker, port)
        after = bare()
        rounds.append(
            {
                "bare": before,
                "full": full,
                "bare_after": after,
                "ratio": full["fps"] / _geomean(before["fps"], after["fps"]),
                "cpu_ratio": _geomean(before["cpu_ms_per_frame"], after["cpu_ms_per_frame"])
                / full["cpu_ms_per_frame"],
            }
        )
        before = after
    return rounds


def _geomean(a: float, b: float) -> float:
    return (a * b) ** 0.5


def summarise(args, bundle: Path, rounds: list[dict]) -> dict:
    ratios = [r["ratio"] for r in rounds]
    return {
        "bundle": str(bundle),
        "artifact": args.artifact,
        "frames_per_round": rounds[0]["bare"]["classified"],
        "rounds": args.rounds,
        "fps_no_outputs": round(med([r["bare"]["fps"] for r in rounds]), 1),
        "fps_mqtt_http_drift": round(med([r["full"]["fps"] for r in rounds]), 1),
        "ratio_median": med(ratios),
        "ratio_quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])],
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "cpu_ms_per_frame_no_outputs": med([r["bare"]["cpu_ms_per_frame"] for r in rounds]),
        "cpu_ms_per_frame_with_outputs": med([r["full"]["cpu_ms_per_frame"] for r in rounds]),
        "cpu_per_frame_ratio_median": med([r["cpu_ratio"] for r in rounds]),
        "mqtt_client_cpu_ms_per_frame": med(
            [r["full"]["mqtt_client_cpu_ms_per_frame"] for r in rounds]
        ),
        "outputs_dropped": rounds[-1]["full"]["dropped"],
        "target": ">= 0.95",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--artifact", default="model_int8.tflite")
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgecls-bench-line-"))
    bundle = args.bundle or make_bundle(work)
    video = work / "frames.mp4"
    write_video(video, args.frames)
    ensure_drift_reference(bundle, video)
    broker = Mosquitto(work / "broker").start()
    port = free_port()
    expected = (args.rounds + 1) * args.frames
    Subscriber(broker, "bench/records", client_id=COUNTER).close()  # the session keeps them
    watching = viewers(port)
    try:
        rounds = measure(args, bundle, video, broker, port)
        sub = Subscriber(broker, "bench/records", client_id=COUNTER)
        sub.wait_for(lambda s: len(s.on("/records")) >= expected, 60)
        received = len(sub.on("/records"))
        sub.close()
    finally:
        watching.kill()
        watching.wait()
        broker.stop()
    report = summarise(args, bundle, rounds)
    report |= {"mqtt_records_received": received, "mqtt_records_expected": expected}
    width = max(map(len, report))
    for k, v in report.items():
        print(f"{k:>{width}}: {v}")
    if args.json:
        args.json.write_text(json.dumps({**report, "per_round": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
