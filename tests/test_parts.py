"""Part inspection: a trigger makes a part, frames captured after it make its one verdict, and a
part the station cannot answer in time gets the fail-safe verdict, in trigger order. The station
alone with synthetic frames, then the loop with a real model on a conveyor-like camera, triggered
through gpiozero's mock pins, MQTT (a real mosquitto) and HTTP."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from brokers import Mosquitto, Subscriber
from mjpeg_server import free_port

from edgecls.errors import EdgeclsError
from edgecls.runtime.loop import run
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.parts import PartsConfig, Station, TriggerSpec
from edgecls.runtime.parts.ids import BLOCK, PartIds
from edgecls.runtime.parts.triggers import plc_fields
from edgecls.runtime.records import Identity, PartCounts, Record
from edgecls.runtime.sources import Frame, Source, SourceEnded

LABELS = ("ok", "def")
ID = Identity("casting", "model_int8.tflite", "ab" * 32, LABELS)
REJECT = "dragonflies"  # the insect model's "defect"


def record(i: int, label: str) -> Record:
    p = (0.9, 0.1) if label == "ok" else (0.1, 0.9)
    return Record(i, time.time(), label, label, 0.9, p, 1.0, "cam", ID)


def station(tmp_path, **kw) -> tuple[Station, list]:
    kw = {"window_ms": 100.0, "rejects": ("def",), **kw}
    config = PartsConfig((TriggerSpec("http"),), state=tmp_path / "ids", **kw)
    out: list = []
    return Station(config, ID, PartCounts()).start(out.append, "cam"), out


# --- the station alone ------------------------------------------------------------------------


def test_each_part_gets_one_verdict_in_trigger_order(tmp_path):
    st, out = station(tmp_path, capture_frames=2, window_ms=300.0)
    a = st.trigger("http", plc_id=4711, encoder=99)
    b = st.trigger("http")
    assert st.current() is a
    for i, label in enumerate(["ok", "def"]):
        st.add_frame(a, record(i, label), time.monotonic())
    assert [p.part for p in out] == [a.id]  # a is answered, b still open
    st.add_frame(b, record(3, "ok"), time.monotonic())
    st.add_frame(b, record(4, "ok"), time.monotonic())
    st.close()
    first, second = out
    assert (first.label, first.reject, first.plc_id, first.encoder) == ("def", True, 4711, 99)
    assert first.frame_labels == ("ok", "def") and not first.fail_safe
    assert (second.part, second.label, second.reject) == (b.id, "ok", False)
    assert second.part == first.part + 1


def test_a_part_without_frames_gets_the_fail_safe_verdict_within_its_window(tmp_path):
    st, out = station(tmp_path, window_ms=80.0)
    t0 = time.monotonic()
    part = st.trigger("http")
    deadline = t0 + 2
    while not out and time.monotonic() < deadline:
        time.sleep(0.005)
    waited = (time.monotonic() - t0) * 1000
    (verdict,) = out
    assert verdict.fail_safe and verdict.reject and verdict.label is None
    assert "no verdict within 80 ms (0 of 1 frames)" in verdict.reason
    assert 80 <= verdict.latency_ms <= waited and waited < 80 + 150
    st.add_frame(part, record(1, "ok"), time.monotonic())  # the model, too late
    assert st.counts.late == 1 and len(out) == 1  # counted, never a second verdict
    st.close()


def test_fail_safe_may_name_a_label_and_unsure_frames_are_fail_safe(tmp_path):
    st, out = station(tmp_path, fail_safe="ok", window_ms=60.0)
    st.trigger("http")
    time.sleep(0.2)
    assert (out[0].label, out[0].reject, out[0].fail_safe) == ("ok", False, True)
    st.close()
    with pytest.raises(EdgeclsError, match="--fail-safe crack: give reject or one of"):
        PartsConfig((TriggerSpec("http"),), fail_safe="crack").check_labels(list(LABELS))
    st, out = station(tmp_path, window_ms=500.0)
    part = st.trigger("http")
    unsure = Record(1, time.time(), None, "ok", 0.4, (0.4, 0.6), 1.0, "cam", ID)
    st.add_frame(part, unsure, time.monotonic())
    st.close()
    assert out[0].fail_safe and out[0].reject and out[0].reason.startswith("unsure")


@pytest.mark.parametrize(
    ("rule", "labels", "expected"),
    [
        ("any", ["ok", "def", "ok"], "def"),
        ("majority", ["ok", "def", "ok"], "ok"),
        ("majority", ["ok", "def"], "def"),  # a tie goes to the reject label
        ("mean", ["ok", "def", "ok"], "ok"),
    ],
)
def test_verdict_rules(tmp_path, rule, labels, expected):
    st, out = station(tmp_path, capture_frames=len(labels), rule=rule, window_ms=1000.0)
    part = st.trigger("http")
    for i, label in enumerate(labels):
        st.add_frame(part, record(i, label), time.monotonic())
    st.close()
    assert out[0].label == expected


def test_a_trigger_storm_answers_every_part_in_order_in_bounded_memory(tmp_path):
    """Triggers far faster than the camera: the queue holds --part-queue parts, the rest are
    answered fail-safe at once, in their place; nothing waits beyond its window."""
    st, out = station(tmp_path, window_ms=50.0, queue=4)
    stop, most = threading.Event(), [0]

    def camera():  # one part every 20 ms
        while not stop.is_set():
            if (part := st.wait(0.01)) is not None:
                time.sleep(0.02)
                st.add_frame(part, record(0, "ok"), time.monotonic())

    worker = threading.Thread(target=camera)
    worker.start()
    parts = []
    for _ in range(3000):  # ~ 10x and more the station's rate
        parts.append(st.trigger("http"))
        most[0] = max(most[0], len(st.order))
        time.sleep(0.0002)
    time.sleep(0.2)
    stop.set()
    worker.join()
    st.close()
    assert [p.part for p in out] == [p.id for p in parts]  # every part, in trigger order
    assert st.counts.overflow > 1000 and st.counts.answered == 3000
    assert st.counts.to_dict()["labels"].get("ok", 0) >= 1  # the camera's own parts, answered
    # what waits is bounded by the window, not by the triggers: <= 50 ms of triggers at most
    assert most[0] < 600
    assert max(p.latency_ms for p in out) < 50 + 300


def test_part_ids_increase_across_restarts_with_one_write_per_block(tmp_path):
    path = tmp_path / "state" / "next-part-id"
    ids = PartIds(path)
    first = [ids.take() for _ in range(5)]
    assert first == [1, 2, 3, 4, 5] and path.read_text().strip() == str(1 + BLOCK)
    again = PartIds(path)  # a restart (or a power cut) skips the rest of the block
    assert again.take() == 1 + BLOCK
    path.write_text("not a number\n")
    with pytest.raises(EdgeclsError, match=r"--part-state .*next-part-id: cannot read"):
        PartIds(path)


def test_a_state_file_that_cannot_be_written_never_refuses_a_part(tmp_path, monkeypatch):
    import edgecls.runtime.parts.ids as ids_module

    logs: list[str] = []
    ids = PartIds(tmp_path / "next-part-id", logs.append)

    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ids_module, "write_text_atomic", full)
    taken = [ids.take() for _ in range(2 * BLOCK + 5)]
    assert taken == list(range(1, 2 * BLOCK + 6))  # every part got its id
    (warning,) = logs  # said once, not per block
    assert "cannot write (No space left on device)" in warning and "may repeat" in warning
    assert (tmp_path / "next-part-id").read_text().strip() == str(1 + BLOCK)  # as last written


def test_plc_fields_read_what_a_trigger_message_carries():
    assert plc_fields('{"plc_id": 4711, "encoder": 123}') == (4711, 123)
    assert plc_fields('{"id": "A-17"}') == ("A-17", None)
    assert plc_fields("4711") == (4711, None)
    assert plc_fields("") == (None, None)
    assert plc_fields('{"plc_id": true, "encoder": "x"}') == (None, None)
    assert plc_fields("lot 7") == ("lot 7", None)
    # nothing that breaks a log line, an OPC UA string or a 64-bit register
    assert plc_fields('{"plc_id": "A\\ud800\\n1"}') == ("A1", None)
    assert plc_fields("9" * 4000) == (None, None)
    assert plc_fields('{"plc_id": 1, "encoder": 99999999999999999999}') == (1, None)


def test_a_stopping_station_takes_no_part(tmp_path):
    st, out = station(tmp_path)
    st.close()
    assert st.trigger("http") is None and out == []  # the server says so to the PLC


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"part_trigger": ["mqtt"]}, "--part-trigger mqtt arrives through --mqtt: give it too"),
        ({"modbus": "5020"}, "--modbus answers parts: give --part-trigger too"),
        ({"part_trigger": ["gpio:27:up"]}, "the edge 'up' is not rising or falling"),
        ({"part_trigger": ["laser"]}, "--part-trigger 'laser' is not known"),
        ({"part_trigger": ["interval:0"]}, "give the seconds between parts"),
        (
            {"part_trigger": ["interval:1"], "capture_delay_ms": 300},
            "--capture-delay-ms 300 is not inside --inspect-window-ms 200",
        ),
        ({"part_trigger": ["interval:1"], "consecutive": 3}, "--consecutive and --window"),
        ({"part_trigger": ["interval:1"], "part_rule": "vote"}, "--part-rule 'vote' is not"),
        ({"part_trigger": ["interval:1"], "capture_frames": 0}, "--capture-frames must be"),
    ],
)
def test_part_options_are_checked_with_one_line(options, message):
    with pytest.raises(EdgeclsError, match=message.replace("(", r"\(").replace("'", "'")):
        LoopOptions(bundle=Path("b"), **options).to_config()


# --- the loop, with a real model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def views(int8_bundle, insects_data) -> dict[str, list[np.ndarray]]:
    """Test images the bundle's int8 TFLite model labels right and surely, per class."""
    from edgecls.bundle.backends import load_predictor
    from edgecls.bundle.preprocess import frame_to_input

    predictor = load_predictor(int8_bundle / "model_int8.tflite")
    labels = json.loads((int8_bundle / "manifest.json").read_text())["labels"]
    chosen = {}
    for label in labels:
        images = [cv2.imread(str(p)) for p in sorted((insects_data / "test" / label).glob("*"))]
        probs = predictor.predict(np.stack([frame_to_input(im, (64, 64)) for im in images]))
        sure = [im for im, p in zip(images, probs, strict=True) if p[labels.index(label)] > 0.9]
        assert len(sure) >= 3, label
        chosen[label] = sure[:3]
    return chosen


class Conveyor(Source):
    """A camera over a conveyor at `fps`: each frame shows what is in view when it is captured,
    and the conveyor notes which part that was, so a test can check what a verdict looked at."""

    live = True

    def __init__(self, first: np.ndarray, fps: float = 60.0):
        self.name, self.period = "conveyor", 1.0 / fps
        self.view: tuple[np.ndarray, str] = (first, "before")
        self.shown: dict[int, str] = {}
        self.index, self.next_at = 0, time.monotonic()
        self.stop = threading.Event()
        self.stalled = threading.Event()

    def place(self, image: np.ndarray, tag: str) -> None:
        self.view = (image, tag)

    def read(self) -> Frame:
        self.next_at = max(self.next_at + self.period, time.monotonic())
        while self.stalled.is_set() or time.monotonic() < self.next_at:
            if self.stop.wait(0.002):
                raise SourceEnded
        image, tag = self.view
        self.index += 1
        self.shown[self.index] = tag
        return Frame(self.index, image.copy())

    def close(self) -> None:
        self.stop.set()


class Lines:
    def __init__(self):
        self.rows, self.lock = [], threading.Lock()

    def write(self, s):
        with self.lock:
            self.rows.append(json.loads(s))

    def flush(self):
        pass

    def parts(self) -> list[dict]:
        with self.lock:
            return [r for r in self.rows if r["type"] == "part"]

    def wait_parts(self, n: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.parts()) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.parts()


@contextlib.contextmanager
def running(bundle, source, tmp_path, **kw):
    """`edgecls run` on a thread, its JSON records collected; stopped at the end."""
    options = {
        "bundle": bundle, "source": "conveyor", "headless": True, "json": True,
        "backend": "litert", "trigger": REJECT, "part_state": str(tmp_path / "ids"), **kw,
    }  # fmt: skip
    lines, logs, result = Lines(), [], {}
    config = LoopOptions(**options).to_config()

    def target():
        try:
            result["summary"] = run(config, out=lines, log=logs.append, source=source)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 30
    while not any(m.startswith("running ") for m in logs) and time.monotonic() < deadline:
        assert thread.is_alive(), result.get("error")
        time.sleep(0.01)
    try:
        yield lines, logs, result
    finally:
        source.stop.set()
        thread.join(30)
    assert not thread.is_alive() and "error" not in result, result.get("error")


def test_gpio_trigger_one_reject_pulse_per_defective_part_from_frames_after_the_trigger(
    int8_bundle, views, tmp_path
):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    Device.pin_factory = MockFactory()
    plan = ["beetles", REJECT, "cockroach", REJECT, REJECT, "beetles"]
    conveyor = Conveyor(views["cockroach"][2])
    try:
        barrier, valve = Device.pin_factory.pin(27), Device.pin_factory.pin(17)
        with running(
            int8_bundle, conveyor, tmp_path, part_trigger=["gpio:27"], gpio="17", pulse_ms=20,
            capture_delay_ms=40, capture_frames=2, inspect_window_ms=2000,
        ) as (lines, logs, _):  # fmt: skip
            for n, label in enumerate(plan):
                barrier.drive_high()  # the part breaks the light barrier...
                time.sleep(0.015)
                conveyor.place(views[label][n % 3], f"part{n}")  # ...and is in view soon after
                barrier.drive_low()
                assert len(lines.wait_parts(n + 1)) == n + 1, logs
            time.sleep(0.3)  # the last pulse ends
            pulses = sum(1 for s in valve.states if s.state)
    finally:
        Device.pin_factory = None
    parts = lines.parts()
    assert [p["label"] for p in parts] == plan, parts
    assert [p["reject"] for p in parts] == [label == REJECT for label in plan]
    assert pulses == plan.count(REJECT)
    for n, part in enumerate(parts):
        assert part["origin"] == "gpio:27" and not part["fail_safe"]
        assert len(part["frames"]) == 2 and min(part["capture_ms"]) >= 40
        assert {conveyor.shown[f] for f in part["frames"]} == {f"part{n}"}
    frames = [r for r in lines.rows if r["type"] == "frame"]
    assert {r["part"] for r in frames} == {p["part"] for p in parts}


def test_a_stalled_camera_and_a_slow_model_still_answer_every_part_in_time(
    int8_bundle, views, tmp_path, monkeypatch
):
    window = 150
    conveyor = Conveyor(views["beetles"][0])
    conveyor.stalled.set()  # the camera delivers no frame
    with running(
        int8_bundle, conveyor, tmp_path, part_trigger=["interval:0.1"], max_parts=6,
        inspect_window_ms=window,
    ) as (lines, _, result):  # fmt: skip
        parts = lines.wait_parts(6)
    assert len(parts) == 6 and all(p["fail_safe"] and p["reject"] for p in parts), parts
    assert all(window <= p["latency_ms"] < window + 150 for p in parts), parts
    assert result["summary"].parts.fail_safe >= 6

    import edgecls.runtime.loop as loop

    real = loop.choose

    def slow(*args, **kw):  # a model slower than the window
        choice = real(*args, **kw)
        predict = choice.predictor.predict
        choice.predictor.predict = lambda x: (time.sleep(window * 1.5 / 1000), predict(x))[1]
        return choice

    monkeypatch.setattr(loop, "choose", slow)
    conveyor = Conveyor(views["beetles"][0])
    with running(
        int8_bundle, conveyor, tmp_path, part_trigger=["interval:0.3"], max_parts=4,
        inspect_window_ms=window,
    ) as (lines, _, result):  # fmt: skip
        parts = lines.wait_parts(4)
    assert all(p["fail_safe"] and p["latency_ms"] < window + 150 for p in parts), parts
    assert "no verdict within 150 ms" in parts[0]["reason"]
    assert result["summary"].parts.late >= 1  # the model's answers, too late, are counted


def test_mqtt_and_http_triggers_carry_the_plc_id_into_the_part_record(int8_bundle, views, tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker, "line/1/parts")
    port = free_port()
    conveyor = Conveyor(views[REJECT][0])
    try:
        with running(
            int8_bundle, conveyor, tmp_path, part_trigger=["mqtt", "http"],
            mqtt=f"{broker.url}/line/1", http=str(port), http_token="t0k",
            inspect_window_ms=2000,
        ) as (_, logs, _result):  # fmt: skip
            deadline = time.monotonic() + 10
            while not any("mqtt: connected" in m for m in logs) and time.monotonic() < deadline:
                time.sleep(0.02)
            sub.client.publish("line/1/trigger", json.dumps({"plc_id": 4711, "encoder": 99}), 1)
            assert sub.wait_for(lambda s: s.on("/parts")), logs
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/trigger", data=b'{"plc_id": "A-17"}', method="POST",
                headers={"Authorization": "Bearer t0k"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as response:
                accepted = json.loads(response.read())
            assert response.status == 202 and accepted["plc_id"] == "A-17"
            assert sub.wait_for(lambda s: len(s.on("/parts")) == 2)
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(request.full_url, data=b"", timeout=5)
            with urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}/latest", headers={"Authorization": "Bearer t0k"}
                ),
                timeout=5,
            ) as response:
                latest = json.loads(response.read())
    finally:
        sub.close()
        broker.stop()
    by_mqtt, by_http = sub.on("/parts")
    assert (by_mqtt["plc_id"], by_mqtt["encoder"], by_mqtt["origin"]) == (4711, 99, "mqtt")
    assert (by_http["plc_id"], by_http["origin"], by_http["part"]) == (
        "A-17", "http", accepted["part"]
    )  # fmt: skip
    assert by_mqtt["label"] == REJECT and by_mqtt["reject"]
    assert latest["last_part"]["part"] == accepted["part"]


def test_the_live_view_draws_the_last_part_verdict(tmp_path):
    from edgecls.runtime.sinks.overlay import draw

    st, out = station(tmp_path)
    st.trigger("http")
    time.sleep(0.2)
    st.close()
    frame = record(1, "ok")
    frame.image = np.zeros((240, 320, 3), np.uint8)
    plain, with_part = (
        draw(frame, frozenset(), 10.0, None),
        draw(frame, frozenset(), 10.0, None, out[0]),
    )
    changed = np.any(plain != with_part, axis=2)
    rows = np.where(changed.any(axis=1))[0]
    assert rows.size and rows.min() > 30  # a line of its own, below the label and the FPS
    assert (with_part[changed][:, 2] > 100).any()  # in red: a reject
