"""What the line outputs cost the loop: FPS with MQTT + HTTP (a live viewer and a /metrics
poller connected) + drift on, over FPS with no outputs, measured in one run, alternating rounds.

    python benchmarks/line_outputs.py [--bundle export/NAME] [--frames 1500] [--rounds 20] [--each]
        [--collect]

Each round is timed from its frame --warm-up (300) on, so what is measured is the steady state a
board runs in for months; start-up (the MQTT connection, the drift monitor filling its window from
every frame, caches) happens once per run and lies before it. Besides wall-clock FPS, it reports
the process's CPU time per frame (all threads; the broker is another process), a figure that a
busy shared machine disturbs much less than FPS; the FPS ratio is (bare CPU per frame) / (full CPU
per frame) when the loop is CPU-bound. The MQTT client's own process is reported apart: its CPU
per frame is what a board pays per record at any frame rate; so is the broker's, which a line may
run on the board or elsewhere.

The source is a 640x480 video file, so the loop runs as fast as the model allows and every
output has to keep up (from a file the loop waits for its outputs rather than dropping, so any
cost shows in the FPS). Without --bundle, the MobileNetV2 int8 bundle of loop_overhead.py is
made. A local mosquitto receives the records and keeps them for a subscriber with a persistent
session, which collects and counts them after the rounds (a PLC or dashboard is another machine:
its CPU is not the board's). A viewer watches the live view and a poller scrapes /metrics, in a
process of their own started once for the whole benchmark. The target is >= 0.95.

A shared machine's speed wanders by 10-20 % over tens of seconds, so rounds are short and go bare,
full, bare, full, ..., bare, and each full round is compared with the bare rounds on both sides of
it (their geometric mean): a drift in speed that is steady across the three cancels out, and the
median over rounds sets aside the rounds in which the machine jumped. How far another run's median
may fall is reported too, as a bootstrap interval over the rounds. It is narrower than the truth:
neighbouring rounds share a bare round, and it cannot see a machine that is busier for a whole run
(here, runs minutes apart differed by more than it says). Pool several runs before judging.
With --each, rounds of each output alone (MQTT; HTTP with its viewer and poller; drift) go in
the same sequence, each between bare rounds, to show where the cost of the full round lies.
With --collect, rounds of `--collect` alone, as a board runs it by default and at its heaviest.
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
from edgecls.runtime.loop_options import LoopOptions  # noqa: E402
from edgecls.runtime.sources import SourceEnded, open_source  # noqa: E402


def ensure_drift_reference(bundle: Path, video: Path) -> None:
    """Bundles exported before drift references existed get one from the video's frames (the
    figures do not matter for speed, only that the monitor runs)."""
    import cv2

    from edgecls.bundle.backends import load_predictor
    from edgecls.bundle.drift import reference_stats
    from edgecls.bundle.folder import load_bundle

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
import socket, sys, threading, time
where, buf = ("127.0.0.1", int(sys.argv[1])), bytearray(1 << 18)
def get(path):
    with socket.create_connection(where, timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: edgecls\r\nConnection: close\r\n\r\n".encode())
        while s.recv_into(buf):
            pass
def watch():
    while True:
        try:
            get("/")
        except OSError:
            time.sleep(0.05)
def scrape():
    while True:
        time.sleep(1.0)
        try:
            get("/metrics")
        except OSError:
            pass
threading.Thread(target=watch, daemon=True).start()
scrape()
"""


COUNTER = "bench-counter"


def viewers(port: int) -> subprocess.Popen:
    """A person watching the live view and Prometheus scraping /metrics every second; between
    rounds (no server) they retry, as a browser tab would. They are other machines on a line, so
    here they read with bare sockets, costing this machine as little as a reader can (urllib took
    0.04 ms of CPU per loop frame)."""
    return subprocess.Popen([sys.executable, "-c", VIEWERS, str(port)])


class SteadyClock:
    """The video source, with the loop timed from frame `warm_up` on: what comes before (the MQTT
    client's connection, the drift monitor measuring every frame until its window is full, caches)
    happens once at start-up, and what a board runs in for months is the steady state after it."""

    def __init__(self, source, warm_up: int):
        self.source, self.warm_up, self.reads = source, warm_up, 0
        # wall, process CPU, MQTT client CPU, broker CPU
        self.start: tuple[float, ...] | None = None
        self.end: tuple[float, ...] | None = None

    def __getattr__(self, name):  # name, live, fps, close, ...: the video's
        return getattr(self.source, name)

    def read(self):
        if self.reads == self.warm_up:
            self.start = _clocks()
        self.reads += 1
        try:
            return self.source.read()
        except SourceEnded:
            self.end = _clocks()
            raise


CHILDREN = (b"mqtt_worker.py", b"mosquitto")  # the MQTT client (the run's), the broker (ours)


def _clocks() -> tuple[float, ...]:
    return time.perf_counter(), time.process_time(), *_children_cpu()


def _children_cpu() -> list[float]:
    """CPU seconds of this process's children whose command line names each of CHILDREN (0 if
    none), from one scan of /proc."""
    tick, totals = os.sysconf("SC_CLK_TCK"), [0.0] * len(CHILDREN)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            which = next((i for i, name in enumerate(CHILDREN) if name in cmdline), None)
            if which is None:
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == os.getpid():  # ppid; utime, stime follow at 11, 12
            totals[which] += (int(fields[11]) + int(fields[12])) / tick
    return totals


# what each kind of round runs: "full" is the benchmark; the others, with --each, show what each
# output costs alone (the MQTT client and broker; the HTTP server with its viewer and poller;
# the drift monitor); with --collect, collection (issue 37's target: >= 0.97) as a board runs it
# (the default rules: unsure frames, a class-balanced audit, at most 1 a second) and at its
# heaviest (every frame unsure, 10 a second kept: a JPEG at 95 and a sidecar each)
VARIANTS = {
    "bare": lambda broker, port, work: {"drift": False},
    "full": lambda broker, port, work: {
        "mqtt": f"{broker.url}/bench", "http": str(port), "drift": True
    },
    "mqtt": lambda broker, port, work: {"mqtt": f"{broker.url}/bench", "drift": False},
    "http": lambda broker, port, work: {"http": str(port), "drift": False},
    "drift": lambda broker, port, work: {"drift": True},
    "collect": lambda broker, port, work: {"collect": work / "collect", "drift": False},
    "collect_heavy": lambda broker, port, work: {
        "collect": work / "collect-heavy", "collect_margin": 1.0, "collect_rate": 10.0,
        "drift": False,
    },
}  # fmt: skip


def one_round(bundle, video, artifact, threads, kw: dict, warm_up: int) -> dict:
    opts = LoopOptions(
        bundle=bundle, source=str(video), artifact=artifact, threads=threads, headless=True, **kw
    )
    source = SteadyClock(open_source(str(video)), warm_up)
    summary = run(opts.to_config(), log=lambda m: None, source=source)
    n = summary.classified - warm_up
    (wall, cpu, client, broker_cpu), end = source.start, source.end
    return {
        "fps": n / (end[0] - wall),
        "cpu_ms_per_frame": (end[1] - cpu) * 1000 / n,
        "mqtt_client_cpu_ms_per_frame": (end[2] - client) * 1000 / n,
        "broker_cpu_ms_per_frame": (end[3] - broker_cpu) * 1000 / n,
        "classified": summary.classified,
        "timed": n,
        "dropped": dict(summary.outputs_dropped),
        "drift": summary.drift.get("state"),
    }


def med(values) -> float:
    return round(float(np.median(values)), 3)


def measure(args, bundle: Path, video: Path, broker, port: int, kinds: list[str]) -> dict:
    """Rounds of each kind, each between two bare rounds: {kind: [round, ...]}."""

    def one(kind: str) -> dict:
        kw = VARIANTS[kind](broker, port, video.parent)
        return one_round(bundle, video, args.artifact, args.threads, kw, args.warm_up)

    one("full")  # the first run of all warms the machine's caches
    rounds, before = {kind: [] for kind in kinds}, one("bare")
    for _ in range(args.rounds):
        for kind in kinds:
            with_outputs = one(kind)
            after = one("bare")
            rounds[kind].append(
                {
                    "bare": before,
                    "full": with_outputs,
                    "bare_after": after,
                    "ratio": with_outputs["fps"] / _geomean(before["fps"], after["fps"]),
                    "cpu_ratio": _geomean(before["cpu_ms_per_frame"], after["cpu_ms_per_frame"])
                    / with_outputs["cpu_ms_per_frame"],
                }
            )
            before = after
    return rounds


def _geomean(a: float, b: float) -> float:
    return (a * b) ** 0.5


def median_interval(values, level: float = 0.9, draws: int = 5000) -> list[float]:
    """The bootstrap interval of the median: rounds drawn again with replacement, `draws` times."""
    v = np.asarray(values, dtype=np.float64)
    medians = np.median(np.random.default_rng(0).choice(v, (draws, len(v))), axis=1)
    tail = 50 * (1 - level)
    return [round(float(q), 3) for q in np.percentile(medians, [tail, 100 - tail])]


def summarise(args, bundle: Path, rounds: list[dict]) -> dict:
    ratios = [r["ratio"] for r in rounds]
    return {
        "bundle": str(bundle),
        "artifact": args.artifact,
        "frames_per_round": rounds[0]["bare"]["classified"],
        "frames_timed_per_round": rounds[0]["bare"]["timed"],
        "rounds": args.rounds,
        "fps_no_outputs": round(med([r["bare"]["fps"] for r in rounds]), 1),
        "fps_mqtt_http_drift": round(med([r["full"]["fps"] for r in rounds]), 1),
        "ratio_median": med(ratios),
        "ratio_median_90pct_interval": median_interval(ratios),
        "ratio_quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])],
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "cpu_ms_per_frame_no_outputs": med([r["bare"]["cpu_ms_per_frame"] for r in rounds]),
        "cpu_ms_per_frame_with_outputs": med([r["full"]["cpu_ms_per_frame"] for r in rounds]),
        "cpu_per_frame_ratio_median": med([r["cpu_ratio"] for r in rounds]),
        "mqtt_client_cpu_ms_per_frame": med(
            [r["full"]["mqtt_client_cpu_ms_per_frame"] for r in rounds]
        ),
        "broker_cpu_ms_per_frame": med([r["full"]["broker_cpu_ms_per_frame"] for r in rounds]),
        "outputs_dropped": rounds[-1]["full"]["dropped"],
        "target": ">= 0.95",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--artifact", default="model_int8.tflite")
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--warm-up", type=int, default=300, help="frames before the timing starts")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--each", action="store_true", help="also each output alone (MQTT, HTTP, drift), paired"
    )
    ap.add_argument("--collect", action="store_true", help="also --collect (default, heavy)")
    args = ap.parse_args()
    if not 0 <= args.warm_up < args.frames:
        ap.error(f"--warm-up {args.warm_up}: give fewer frames than --frames {args.frames}")

    work = Path(tempfile.mkdtemp(prefix="edgecls-bench-line-"))
    bundle = args.bundle or make_bundle(work)
    video = work / "frames.mp4"
    write_video(video, args.frames)
    ensure_drift_reference(bundle, video)
    broker = Mosquitto(work / "broker").start()
    port = free_port()
    kinds = ["full", *(["mqtt", "http", "drift"] if args.each else [])]
    kinds += ["collect", "collect_heavy"] if args.collect else []
    # the warm-up round and every round that publishes
    expected = 1 + args.rounds * sum("mqtt" in VARIANTS[k](broker, port, work) for k in kinds)
    expected *= args.frames
    Subscriber(broker, "bench/records", client_id=COUNTER).close()  # the session keeps them
    watching = viewers(port)
    try:
        rounds = measure(args, bundle, video, broker, port, kinds)
        sub = Subscriber(broker, "bench/records", client_id=COUNTER)
        sub.wait_for(lambda s: len(s.on("/records")) >= expected, 60)
        received = len(sub.on("/records"))
        sub.close()
    finally:
        watching.kill()
        watching.wait()
        broker.stop()
    report = summarise(args, bundle, rounds["full"])
    for kind in kinds[1:]:  # alone: what each output costs (their product ~ the full ratio)
        ratios = [r["ratio"] for r in rounds[kind]]
        report[f"ratio_median_{kind}_alone"] = med(ratios)
        report[f"ratio_median_{kind}_alone_90pct_interval"] = median_interval(ratios)
        report[f"cpu_per_frame_ratio_median_{kind}_alone"] = med(
            [r["cpu_ratio"] for r in rounds[kind]]
        )
    report |= {"mqtt_records_received": received, "mqtt_records_expected": expected}
    width = max(map(len, report))
    for k, v in report.items():
        print(f"{k:>{width}}: {v}")
    if args.json:
        args.json.write_text(json.dumps({**report, "per_round": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
