"""How long a part waits for its verdict: trigger -> reject pulse and trigger -> Modbus register,
p50/p99, beside the station's floor, with MQTT, HTTP and Modbus on, in one run.

    python benchmarks/part_latency.py [--bundle export/NAME] [--parts 300] [--rate 5]
                                      [--fps 30] [--capture-delay-ms 20] [--capture-frames 1]

Parts are triggered at a steady --rate, in turn through the three ways a line triggers: the light
barrier on a GPIO input (gpiozero's mock pin), an MQTT message to a local mosquitto, and the
trigger coil of the Modbus server (a real pymodbus client, as the PLC). Every label is a reject
label, so every part pulses the reject output (the mock valve pin, whose state changes are
time-stamped by gpiozero) and a PLC polling the Modbus result sequence every millisecond sees each
verdict. The camera is a live source at --fps that delivers 640x480 frames; a --capture-frames
verdict needs that many frames captured after trigger + --capture-delay-ms.

The floor is what no station can beat with this camera and model: the capture delay, one frame
period (on average half, at worst all of it, until the first frame after the delay), a period
for each further frame (or the model's latency, if slower), and the model's latency on the last
frame (its median in this run). The ratio p99 / floor is the target (<= 1.2): what the station
adds on top of the camera and the model, the queues, threads, outputs and protocols.

Without --bundle, the MobileNetV2 int8 bundle of loop_overhead.py is made (224 px).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from brokers import Mosquitto, Subscriber  # noqa: E402
from loop_overhead import make_bundle  # noqa: E402
from mjpeg_server import free_port  # noqa: E402

from edgecls.runtime.loop import run  # noqa: E402
from edgecls.runtime.loop_options import LoopOptions  # noqa: E402
from edgecls.runtime.sources import Frame, Source, SourceEnded  # noqa: E402


class Camera(Source):
    """A live camera: a new 640x480 frame every period, read as the newest."""

    live = True

    def __init__(self, fps: float):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
        self.name, self.period, self.index = "camera", 1.0 / fps, 0
        self.start = time.monotonic()
        self.stop = threading.Event()

    def read(self) -> Frame:
        elapsed = time.monotonic() - self.start
        n = int(elapsed / self.period) + 1  # the next frame the sensor delivers
        if n <= self.index:
            n = self.index + 1
        if self.stop.wait(max(0.0, self.start + n * self.period - time.monotonic())):
            raise SourceEnded
        self.index = n
        return Frame(n, self.images[n % len(self.images)])

    def close(self) -> None:
        self.stop.set()


class Plc:
    """A PLC on Modbus: triggers through the coil, polls the result sequence every millisecond
    and notes when each new verdict appears."""

    def __init__(self, port: int):
        from pymodbus.client import ModbusTcpClient

        self.client = ModbusTcpClient("127.0.0.1", port=port)
        assert self.client.connect(), "cannot reach the Modbus server"
        self.lock = threading.Lock()
        self.seen: list[float] = []  # perf_counter of each new sequence value
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        from pymodbus.exceptions import ModbusException

        last = None
        while not self.stop.wait(0.001):
            try:
                with self.lock:
                    reply = self.client.read_holding_registers(2, count=1)
            except (ModbusException, OSError):  # the run ended, and its server with it
                return
            now = time.perf_counter()
            if reply.isError():
                continue
            if last is not None and reply.registers[0] != last:
                self.seen.append(now)
            last = reply.registers[0]

    def trigger(self) -> None:
        with self.lock:
            self.client.write_coil(0, True)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


def rises(pin) -> list[float]:
    """Monotonic times the mock pin went high: gpiozero stamps each change with the time since
    the one before; the last change's own time anchors them."""
    states = list(pin.states)
    times, t = [], pin._last_change
    for state in reversed(states[1:]):
        if state.state:
            times.append(t)
        t -= state.timestamp
    return sorted(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--rate", type=float, default=5.0, help="parts a second")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--capture-delay-ms", type=float, default=20.0)
    ap.add_argument("--capture-frames", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = args.bundle or make_bundle(work)
        result = measure(bundle, work, args)
    print(json.dumps(result, indent=2))
    return 0


def measure(bundle: Path, work: Path, args) -> dict:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    Device.pin_factory = MockFactory()
    labels = json.loads((bundle / "manifest.json").read_text())["labels"]
    broker = Mosquitto(work / "broker").start()
    sub = Subscriber(broker, "line/parts")
    modbus, camera = free_port(), Camera(args.fps)
    options = LoopOptions(
        bundle=bundle, source="camera", headless=True, backend="litert",
        part_trigger=["gpio:27", "mqtt", "modbus"], gpio="17", pulse_ms=5,
        trigger=",".join(labels), mqtt=f"{broker.url}/line", mqtt_publish="decisions",
        http=str(free_port()), modbus=str(modbus), capture_delay_ms=args.capture_delay_ms,
        capture_frames=args.capture_frames, inspect_window_ms=1000, max_parts=args.parts,
        part_state=str(work / "ids"),
    )  # fmt: skip
    box: dict = {}
    loop = threading.Thread(
        target=lambda: box.update(
            summary=run(options.to_config(), log=lambda m: None, source=camera)
        )
    )
    loop.start()
    time.sleep(3.0)  # the model chosen and warmed up, MQTT connected
    plc = Plc(modbus)
    barrier, valve = Device.pin_factory.pin(27), Device.pin_factory.pin(17)
    sent = drive(args, barrier, sub, plc)
    loop.join(60)
    plc.close()
    sub.close()
    broker.stop()
    Device.pin_factory = None
    return report(args, box["summary"], sent, rises(valve), plc.seen)


def drive(args, barrier, sub, plc) -> list[tuple[str, float]]:
    """Triggers at a steady rate, in turn by GPIO, MQTT and Modbus; (way, monotonic time)."""
    ways = {
        "gpio": lambda: (barrier.drive_high(), barrier.drive_low()),
        "mqtt": lambda: sub.client.publish("line/trigger", "", qos=1),
        "modbus": plc.trigger,
    }
    sent, start = [], time.monotonic()
    # a steady rate, each trigger at a random phase of the camera's frame period (a rate that
    # divides the frame rate would otherwise meet every frame at the same point)
    jitter = np.random.default_rng(1).uniform(0, 1 / args.fps, args.parts)
    for i in range(args.parts):
        time.sleep(max(0.0, start + i / args.rate + jitter[i] - time.monotonic()))
        way = list(ways)[i % len(ways)]
        sent.append((way, time.monotonic(), time.perf_counter()))
        ways[way]()
    return sent


def _percentiles(ms: list[float]) -> dict:
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
    }


def report(args, summary, sent, pulses, registers) -> dict:
    """Each trigger's pulse and register change: the first of each after it (parts are answered
    in trigger order, one at a time at this rate)."""
    model_ms = summary.latency.percentile(50)
    period = 1000 / args.fps
    n = args.capture_frames
    floor = args.capture_delay_ms + period + (n - 1) * max(period, model_ms) + model_ms
    out = {
        "parts": summary.parts.to_dict(),
        "model_latency_ms_p50": round(model_ms, 2),
        "floor_ms": round(floor, 2),
    }
    for name, times, clock in (("pulse", pulses, 1), ("register", registers, 2)):
        per_way: dict[str, list[float]] = {}
        for way, *t0 in sent:
            after = [t for t in times if t >= t0[clock - 1]]
            if after:
                per_way.setdefault(way, []).append((min(after) - t0[clock - 1]) * 1000)
        everything = [ms for v in per_way.values() for ms in v]
        out[f"trigger_to_{name}_ms"] = {
            **_percentiles(everything),
            "ratio_p99_over_floor": round(float(np.percentile(everything, 99)) / floor, 3),
            "by_trigger": {w: _percentiles(v) for w, v in per_way.items()},
            "answered": len(everything),
        }
    return out


if __name__ == "__main__":
    raise SystemExit(main())
