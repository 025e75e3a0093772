"""The line side without a model: decisions, sinks (MQTT on a real mosquitto, HTTP, GPIO on the
mock pin factory, on-trigger, saved frames, recording, JSON log), the device file and the
constant-memory summary, driven by synthetic records."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from brokers import Mosquitto, Subscriber, make_certificates
from mjpeg_server import free_port

from edgecls.errors import EdgeclsError
from edgecls.runtime.decisions import DecisionConfig, DecisionRule
from edgecls.runtime.loop_options import LoopOptions, merge_options, read_device_file
from edgecls.runtime.records import Identity, LatencyStats, Record, Summary
from edgecls.runtime.sinks import Sink, SinkContext, Sinks, build_sinks
from edgecls.runtime.sinks.mqtt_worker import NICE

LABELS = ("ok", "def")
ID = Identity("casting", "model_int8.tflite", "ab" * 32, LABELS)
ROOT = Path(__file__).resolve().parents[1]


def record(i: int, label: str | None = "ok", conf: float = 0.9, image=True) -> Record:
    p = (conf, 1 - conf) if label == "ok" else (1 - conf, conf)
    frame = np.full((48, 64, 3), (i * 7) % 256, np.uint8) if image else None
    return Record(
        frame=i,
        time=time.time(),
        label=label,
        top=label or "ok",
        confidence=conf,
        probs=p,
        latency_ms=1.5,
        source="test.mp4",
        identity=ID,
        image=frame,
    )


def context(logs: list | None = None, live: bool = False, **kw) -> SinkContext:
    """live=False: the test's events all arrive (a full queue waits); live=True: drops count."""
    logs = [] if logs is None else logs
    return SinkContext(
        summary=Summary(), stop=threading.Event(), log=logs.append, identity=ID, live=live, **kw
    )


def config(**options):
    return LoopOptions(bundle=Path("b"), headless=True, **options).to_config()


def run_sinks(cfg, events, ctx=None):
    ctx = ctx or context()
    sinks = build_sinks(cfg, ctx).open()
    for e in events:
        sinks.publish(e)
    sinks.close()
    return ctx, sinks


# --- decisions --------------------------------------------------------------------------------


def test_consecutive_rule_fires_once_per_run_of_trigger_labels():
    rule = DecisionRule(DecisionConfig(("def",), consecutive=3))
    script = [{"o": "ok", "d": "def"}[c] for c in "oddodddddoddd"]
    fired = [i for i, lab in enumerate(script) if rule.update(record(i, lab))]
    # the third def in a row fires; staying def does not fire again; an ok re-arms
    assert fired == [6, 12]
    d = DecisionRule(DecisionConfig(("def",), consecutive=3))
    out = [d.update(record(i, lab)) for i, lab in enumerate(script)]
    decision = next(x for x in out if x)
    assert decision.to_dict()["label"] == "def" and decision.to_dict()["hits"] == 3
    assert decision.to_dict()["sha256"] == ID.sha256


def test_window_rule_needs_k_of_n_and_uncertain_frames_never_trigger():
    rule = DecisionRule(DecisionConfig(("def",), window=5, min_hits=3))
    script = ["def", "ok", "def", None, "def", "def", "ok", "ok", "ok", "ok", "def", "def", "def"]
    fired = [i for i, lab in enumerate(script) if rule.update(record(i, lab))]
    assert fired == [4, 12]
    with pytest.raises(EdgeclsError, match="--min-hits"):
        DecisionConfig(("def",), window=3, min_hits=4).check_labels(list(LABELS))
    with pytest.raises(EdgeclsError, match="--trigger crack"):
        DecisionConfig(("crack",)).check_labels(list(LABELS))


# --- GPIO and on-trigger -------------------------------------------------------------------


def test_gpio_pulses_once_per_decision_on_the_mock_pin():
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    Device.pin_factory = MockFactory()
    try:
        cfg = config(trigger="def", consecutive=2, gpio="17", pulse_ms=30)
        rule = DecisionRule(cfg.decision)
        ctx = context()
        sinks = build_sinks(cfg, ctx).open()
        (gpio,) = [r.sink for r in sinks.runners if r.sink.name == "gpio"]
        for i, lab in enumerate(["ok", "def", "def", "def", "ok"]):
            r = record(i, lab)
            sinks.publish(r)
            if d := rule.update(r):
                sinks.publish(d)
        pin = gpio.device.pin
        deadline = time.monotonic() + 5
        while [s.state for s in pin.states] != [False, True, False] and time.monotonic() < deadline:
            time.sleep(0.01)
        states = list(pin.states)
        sinks.close()
    finally:
        Device.pin_factory = None
    assert [s.state for s in states] == [False, True, False]
    # the mock pin stamps each state with the time since the previous change: the pulse length
    assert states[2].timestamp >= 0.03 * 0.9


def test_on_trigger_runs_the_command_without_a_shell_and_reports_failure_once(tmp_path):
    out = tmp_path / "got.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "d = json.load(sys.stdin)\n"
        f"open({str(out)!r}, 'a').write(json.dumps([d['label'], os.environ['EDGECLS_LABEL']])"
        " + '\\n')\n"
    )
    cfg = config(trigger="def", on_trigger=f"{sys.executable} {script} '$HOME; rm -rf /'")
    rule = DecisionRule(cfg.decision)
    decisions = [d for i in range(3) if (d := rule.update(record(i, "def" if i != 1 else "ok")))]
    ctx, _ = run_sinks(cfg, decisions)
    assert [json.loads(x) for x in out.read_text().splitlines()] == [["def", "def"]] * 2
    assert not ctx.summary.output_errors
    logs = []
    ctx, _ = run_sinks(config(trigger="def", on_trigger="false"), decisions, context(logs))
    assert ctx.summary.output_errors["on-trigger"] == 2
    assert sum("output on-trigger failed" in m for m in logs) == 1
    with pytest.raises(EdgeclsError, match="no such program"):
        build_sinks(config(trigger="def", on_trigger="no-such-prog-x"), context()).open()


def _hang_in_a_child(pid_file: Path) -> str:
    """A shell that starts a program and waits for it: a kill of the shell alone leaves the
    program running (and holding the pipes the sink reads)."""
    hang = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    return shlex.join(["sh", "-c", f"{shlex.join([sys.executable, '-c', hang])} & wait"])


def _pid_from(pid_file: Path) -> int:
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(pid_file.read_text())


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 5  # killed, and reaped by whoever is its parent
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


def test_an_on_trigger_command_still_running_at_the_end_is_killed_not_left_behind(tmp_path):
    pid_file = tmp_path / "pid"
    cfg = config(trigger="def", on_trigger=_hang_in_a_child(pid_file))
    logs = []
    sinks = build_sinks(cfg, context(logs)).open()
    sinks.publish(DecisionRule(cfg.decision).update(record(0, "def")))
    pid = _pid_from(pid_file)
    sinks.close(timeout=0.5)
    assert any("output on-trigger did not finish in time" in m for m in logs)
    assert _gone(pid)


def test_an_on_trigger_command_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "pid"
    cfg = config(trigger="def", on_trigger=_hang_in_a_child(pid_file), on_trigger_timeout=1.0)
    logs = []
    ctx, _ = run_sinks(cfg, [DecisionRule(cfg.decision).update(record(0, "def"))], context(logs))
    assert ctx.summary.output_errors["on-trigger"] == 1
    assert any("ran past 1 s and was killed" in m for m in logs), logs
    assert not any("did not finish in time" in m for m in logs), logs  # the pipes did not hold it
    assert _gone(_pid_from(pid_file))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"  # a zombie


# --- saved frames and recording ---------------------------------------------------------------


def test_recording_uses_the_source_frame_rate_and_is_playable(tmp_path):
    out = tmp_path / "rec.mp4"
    ctx = context(source_fps=lambda: 12.0, triggers=frozenset({"def"}))
    run_sinks(config(record=str(out), every=2), [record(i) for i in range(20)], ctx)
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(6.0)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 20
    # a live source: the rate is measured from the records' times
    live = tmp_path / "live.mp4"
    events = [record(i) for i in range(70)]
    for i, r in enumerate(events):
        r.time = 1000.0 + i / 25
    run_sinks(config(record=str(live)), events)
    cap = cv2.VideoCapture(str(live))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0, rel=0.02)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 70


# --- JSON log ----------------------------------------------------------------------------------


FULL_DISK_CHILD = """
import json, resource, signal, sys
sys.path[:0] = sys.argv[3:]
from test_line_outputs import config, context, record, run_sinks
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), or is short
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
ctx, _ = run_sinks(config(log_file=sys.argv[1]), [record(i) for i in range(40)])
print(json.dumps(dict(ctx.summary.output_errors)))
"""


def test_json_log_on_a_disk_that_fills_holds_whole_lines_only(tmp_path):
    """A real short write: the kernel stops a file at RLIMIT_FSIZE mid-line, as a full disk
    does; the line it cut is taken back, and every line left is whole."""
    log = tmp_path / "records.jsonl"
    line = len(json.dumps(record(0).to_dict())) + 1
    limit = int(line * 3.5)  # room for three lines and half of the fourth
    args = [str(log), str(limit), str(ROOT), str(ROOT / "tests")]
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, *args], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.splitlines()[-1])["json"] >= 1  # the failures are counted
    data = log.read_bytes()
    assert data.endswith(b"\n") and len(data) <= limit
    rows = [json.loads(x) for x in data.splitlines()]  # each one parses: no half line
    assert [r["frame"] for r in rows] == [0, 1, 2]


def test_json_log_rotates_and_goes_to_a_file_under_systemd(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "records.jsonl"
    cfg = config(log_file=str(log), log_max_mb=0.002, log_backups=2)  # ~2 KB per file
    run_sinks(cfg, [record(i) for i in range(60)])
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["records.jsonl", "records.jsonl.1", "records.jsonl.2"]
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert rows[-1]["frame"] == 59 and rows[-1]["sha256"] == ID.sha256
    assert set(rows[0]["probs"]) == set(LABELS)

    from edgecls.runtime.sinks import jsonlog

    monkeypatch.setattr(jsonlog, "stdout_is_journal", lambda: True)
    monkeypatch.setenv("LOGS_DIRECTORY", str(tmp_path / "svc"))
    assert jsonlog.records_file(config(json=True)) == tmp_path / "svc" / "records.jsonl"
    monkeypatch.setattr(jsonlog, "stdout_is_journal", lambda: False)
    assert jsonlog.records_file(config(json=True)) is None


# --- queues ------------------------------------------------------------------------------------


def test_a_slow_output_never_blocks_a_live_loop_and_its_drops_are_counted():
    class Slow(Sink):
        name, needs = "slow", frozenset()

        def open(self, context):
            pass

        def handle(self, event):
            time.sleep(0.05)

        def close(self):
            pass

    ctx = context(live=True)
    sinks = Sinks([Slow()], ctx, depth=4).open()
    t0 = time.perf_counter()
    for i in range(200):
        sinks.publish(record(i, image=False))
    offered = time.perf_counter() - t0
    sinks.close()
    assert ctx.summary.outputs_dropped["slow"] >= 190
    assert offered < 0.05 * 20  # far less than the sink's own time: nothing waited on it
    ctx = context(live=False)  # a file: the loop waits instead, nothing dropped
    sinks = Sinks([Slow()], ctx, depth=4).open()
    for i in range(10):
        sinks.publish(record(i, image=False))
    sinks.close()
    assert not ctx.summary.outputs_dropped


def test_a_lingering_output_takes_a_decision_at_once_and_a_filling_queue_before_it_overflows():
    class Gathering(Sink):  # lingers far longer than any test waits: only a cut-short linger shows
        name, needs, linger = "gathering", frozenset(), 30.0

        def __init__(self):
            self.handled = []
            self.got = threading.Event()

        def open(self, context):
            pass

        def handle(self, event):
            self.handled.append(event)
            self.got.set()

        def close(self):
            pass

    sink = Gathering()
    ctx = context(live=True)
    sinks = Sinks([sink], ctx, depth=8).open()
    sinks.publish(record(0, image=False))
    decision = DecisionRule(DecisionConfig(("def",), consecutive=1)).update(record(1, "def"))
    sinks.publish(decision)
    assert sink.got.wait(10), "a decision waited for the linger"
    assert sink.handled[-1] is decision
    sink.got.clear()
    for i in range(2, 7):  # half of the queue (8) waits, whether or not the first is taken
        sinks.publish(record(i, image=False))
    assert sink.got.wait(10), "a half-full queue waited for the linger"
    t0 = time.monotonic()
    sinks.close()
    assert time.monotonic() - t0 < 10  # the close marker cuts the linger short too
    assert [e.frame for e in sink.handled] == [0, 1, 2, 3, 4, 5, 6]
    assert not ctx.summary.outputs_dropped


def test_an_inline_output_runs_on_the_loops_thread_and_its_faults_are_counted():
    class Quick(Sink):  # as the live view and the drift monitor: a few microseconds, never I/O
        name, needs, inline = "quick", frozenset(), True

        def __init__(self):
            self.handled = []

        def open(self, context):
            pass

        def handle(self, event):
            self.handled.append((event, threading.current_thread()))
            if event.frame in (3, 5):
                raise ValueError(f"bad frame {event.frame}")

        def close(self):
            self.closed = True

    sink, logs = Quick(), []
    ctx = context(logs, live=True)
    sinks = Sinks([sink], ctx, depth=1).open()
    assert not any(t.name == "sink-quick" for t in threading.enumerate())
    for i in range(8):
        sinks.publish(record(i))
        assert len(sink.handled) == i + 1  # handed over before publish returned: no queue
    sinks.close()
    assert sink.closed
    assert [e.frame for e, _ in sink.handled] == list(range(8))
    assert {t for _, t in sink.handled} == {threading.current_thread()}
    assert all(e.image is None for e, _ in sink.handled)  # its own copy, without the frame
    assert ctx.summary.output_errors["quick"] == 2
    assert not ctx.summary.outputs_dropped  # a depth of 1 never applies: nothing waits
    warnings = [m for m in logs if "quick" in m]
    assert len(warnings) == 1 and "ValueError: bad frame 3" in warnings[0]


def test_summary_is_constant_size_and_its_percentiles_are_close():
    stats = LatencyStats()
    rng = np.random.default_rng(1)
    values = rng.lognormal(1.0, 0.6, 100_000)
    size_before = stats.counts.nbytes
    for v in values:
        stats.add(float(v))
    assert stats.counts.nbytes == size_before and stats.count == 100_000
    for q in (50, 90, 99):
        assert stats.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.015)
    buckets = stats.cumulative_buckets()
    assert buckets[-1] == ("+Inf", 100_000) and all(
        a[1] <= b[1] for a, b in itertools.pairwise(buckets)
    )
    summary = Summary()
    assert "latencies_ms" not in summary.__dict__


# --- device file -------------------------------------------------------------------------------


def test_device_file_sets_options_and_the_command_line_wins(tmp_path):
    f = tmp_path / "device.yaml"
    f.write_text(
        "bundle: /opt/bundle\nsource: 0\ntrigger: [def]\nconsecutive: 3\ngpio: 17\n"
        "mqtt: mqtt://user:${MQTT_PASS}@broker:1883/line/1\nhttp: 0.0.0.0:8080\n"
        "http_token: t0k\nsave-max-mb: 500\n"
    )
    import os

    os.environ["MQTT_PASS"] = "s3cret"
    opts = merge_options(read_device_file(f), {"consecutive": 5})
    cfg = opts.to_config()
    assert cfg.source == "0" and cfg.decision.trigger == ("def",) and cfg.decision.consecutive == 5
    assert cfg.gpio.pin == "17" and cfg.mqtt.password == "s3cret" and cfg.mqtt.prefix == "line/1"
    assert cfg.http.host == "0.0.0.0" and cfg.http.port == 8080 and cfg.save_max_mb == 500
    for text, match in (
        ("mqqt: mqtt://x\n", "mqqt: unknown key"),
        ("consecutive: three\n", "consecutive: must be a number"),
        ("headless: maybe\n", "headless: must be true or false"),
        ("- a list\n", "top level"),
        ("source: [\n", "not valid YAML"),
        # an unset secret is not the literal text `${...}` (a token anyone can read in the docs)
        ("http_token: ${EDGECLS_TEST_UNSET}\n", r"http_token: \$\{EDGECLS_TEST_UNSET\} is not set"),
    ):
        f.write_text(text)
        with pytest.raises(EdgeclsError, match=match) as e:
            read_device_file(f)
        assert "\n" not in str(e.value)
    f.write_text("mqtt: mqtt://u:pa$$word@b/p\n")  # a `$` outside ${...} is the value's own
    assert read_device_file(f)["mqtt"] == "mqtt://u:pa$$word@b/p"
    shipped = read_device_file(ROOT / "device" / "device.yaml")
    assert "source" in shipped and "bundle" in shipped


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"roi": "1,2,3"}, "--roi"),
        ({"roi": "0,0,0,5"}, "--roi"),
        ({"mqtt": "http://x/y"}, "--mqtt"),
        ({"mqtt": "mqtt://x:99999/y"}, "--mqtt"),
        ({"mqtt": "mqtt://x:0/y"}, "port is not a number in 1..65535"),  # not 1883 silently
        ({"mqtt": "mqtt://[::1/y"}, "not a valid URL"),
        ({"mqtt": "mqtt://x/line/+/cam"}, "wildcard"),  # paho would refuse each publish
        ({"mqtt": "mqtt://x/y", "mqtt_ca": Path(__file__)}, "--mqtt-ca is for TLS"),
        ({"mqtt": "mqtts://x/y", "mqtt_ca": Path(__file__).parent}, "--mqtt-ca .*not a file"),
        ({"gpio": "17", "trigger": "def", "pulse_ms": float("nan")}, "--pulse-ms"),
        ({"on_trigger": "true", "trigger": "def", "on_trigger_timeout": float("inf")}, "timeout"),
        ({"http": "8080", "stall_seconds": float("nan")}, "--stall-seconds"),
        ({"http": "8080", "http_token": ""}, "--http-token is empty"),  # not: no auth at all
        ({"http": "localhost:port"}, "--http"),
        ({"min_confidence": 2.0}, "--min-confidence"),
        ({"max_frames": 0}, "--max-frames"),
        ({"gpio": "17"}, "--trigger"),
        ({"source": ""}, "--source is empty"),  # not: the working folder, read as images
    ],
)
def test_bad_run_options_are_one_line_errors(options, match):
    with pytest.raises(EdgeclsError, match=match):
        config(**options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"window": 5}, "--window and --min-hits go together"),
        ({"window": 5, "min_hits": 3, "consecutive": 2}, "two rules"),  # not: one of them ignored
        ({"window": 5, "min_hits": 6}, "--min-hits must be between"),
        ({"trigger": "nope"}, "--trigger nope: not in the bundle's labels"),
    ],
)
def test_bad_decision_rules_are_one_line_errors(options, match):
    """Checked against the bundle's labels when the run starts."""
    with pytest.raises(EdgeclsError, match=match):
        config(**{"trigger": "def", **options}).decision.check_labels(list(LABELS))


# --- MQTT on a real broker ---------------------------------------------------------------------


@pytest.fixture()
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def test_mqtt_records_decisions_status_and_a_broker_restart_lose_nothing(broker):
    sub = Subscriber(broker, "line/#")
    logs = []
    cfg = config(mqtt=f"{broker.url}/line", trigger="def")
    ctx = context(logs)
    sinks = build_sinks(cfg, ctx).open()
    (mqtt,) = [r.sink for r in sinks.runners]
    assert mqtt.connected.wait(10)
    # the client gives way to the loop: 10 steps nicer than this process (19 at most)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, mqtt.proc.pid) == min(ours + NICE, 19)
    for i in range(50):
        sinks.publish(record(i))
    assert sub.wait_for(lambda s: len(s.on("/records")) >= 50)
    broker.stop()  # the broker goes away mid-run...
    for i in range(50, 150):
        sinks.publish(record(i))
        time.sleep(0.002)
    broker.start()  # ...and comes back on the same port
    for i in range(150, 200):
        sinks.publish(record(i))
    assert sub.wait_for(lambda s: len({r["frame"] for r in s.on("/records")}) == 200, 30)
    sinks.close()
    assert sub.wait_for(lambda s: s.on("/status")[-1:] == ["offline"])
    sub.close()
    frames = {r["frame"] for r in sub.on("/records")}
    assert frames == set(range(200))
    assert "online" in sub.on("/status")
    assert any("reconnected" in m for m in logs)
    assert sum("lost the broker" in m for m in logs) == 1  # the restart; the clean stop is not
    assert not ctx.summary.outputs_dropped
    row = sub.on("/records")[0]
    assert {"label", "confidence", "probs", "frame", "time", "source", "bundle", "artifact",
            "sha256", "latency_ms"} <= set(row)  # fmt: skip


def test_a_killed_mqtt_client_is_started_again_and_records_flow_on(broker):
    sub = Subscriber(broker, "line/#")
    logs = []
    ctx = context(logs, live=True)
    sinks = build_sinks(config(mqtt=f"{broker.url}/line"), ctx).open()
    (mqtt,) = [r.sink for r in sinks.runners]
    assert mqtt.connected.wait(10)
    for i in range(20):
        sinks.publish(record(i))
    assert sub.wait_for(lambda s: len(s.on("/records")) >= 20)
    first = mqtt.proc.pid
    os.kill(first, signal.SIGKILL)  # the OOM killer, say
    deadline = time.monotonic() + 20
    i = 20
    while not (mqtt.proc.pid != first and mqtt.connected.is_set()):
        assert time.monotonic() < deadline, logs
        sinks.publish(record(i))
        i += 1
        time.sleep(0.02)
    after = i
    for i in range(after, after + 20):
        sinks.publish(record(i))
    assert sub.wait_for(
        lambda s: set(range(after, after + 20)) <= {r["frame"] for r in s.on("/records")}, 20
    )
    sinks.close()
    sub.close()
    assert sum("the client process ended (exit -9)" in m for m in logs) == 1, logs
    assert ctx.summary.outputs_dropped["mqtt"] >= 1  # what found it gone, counted
    assert not ctx.summary.output_errors  # not an output fault for the rest of the run


def test_mqtt_without_a_broker_runs_on_says_so_and_counts_overflow(tmp_path):
    logs = []
    port = free_port()  # nothing listens here
    cfg = config(mqtt=f"mqtt://127.0.0.1:{port}/x", mqtt_queue=20)
    ctx = context(logs)
    t0 = time.perf_counter()
    sinks = build_sinks(cfg, ctx).open()
    for i in range(100):
        sinks.publish(record(i))
    deadline = time.monotonic() + 10
    while not any("no broker" in m for m in logs) and time.monotonic() < deadline:
        time.sleep(0.05)
    sinks.close()
    assert time.perf_counter() - t0 < 10  # it never waited for the broker
    assert any("no broker at 127.0.0.1" in m for m in logs)
    assert ctx.summary.outputs_dropped["mqtt"] >= 80  # 20 kept, the rest counted
    assert sum("mqtt queue full" in m for m in logs) == 1


def test_mqtt_a_broker_whose_connection_hangs_costs_the_loop_no_record_meanwhile():
    """A host that drops our SYNs (down, or firewalled) holds the client in a connection attempt
    for up to 2 s; the records of that time wait in the pipe to the client, none is dropped, and a
    stop meanwhile still counts every record that never reached a broker."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []  # a full accept queue: the kernel drops further SYNs, as a dead host does
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
        fillers.append(filler)
    time.sleep(0.2)
    port = server.getsockname()[1]
    logs = []
    ctx = context(logs, live=True)  # a camera: a full queue would drop and count
    sinks = build_sinks(config(mqtt=f"mqtt://127.0.0.1:{port}/x"), ctx).open()
    try:
        for i in range(1500):  # ~0.5 MB in about a second, while the client's connect hangs
            sinks.publish(record(i, image=False))
            time.sleep(0.0005)
        time.sleep(0.3)  # the sink's last burst reaches the pipe
        dropped_meanwhile = dict(ctx.summary.outputs_dropped)
    finally:
        sinks.close()  # still unreachable
        for sock in [server, *fillers]:
            sock.close()
    assert not dropped_meanwhile
    assert any("no broker at 127.0.0.1" in m for m in logs)
    assert not any("did not stop in time" in m for m in logs)
    assert ctx.summary.outputs_dropped["mqtt"] == 1500  # lost or over the queue: each counted
    assert any("1000 messages never reached the broker" in m for m in logs)


def test_an_mqtt_client_that_cannot_start_is_one_clear_error(broker, tmp_path):
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    bad = config(mqtt=f"mqtts://127.0.0.1:{broker.port}/x", mqtt_ca=str(garbage))
    with pytest.raises(EdgeclsError, match=r"--mqtt 127.0.0.1:\d+: the MQTT client did not start"):
        build_sinks(bad, context()).open()


def test_mqtt_last_will_says_offline_when_the_board_dies(broker, tmp_path):
    import subprocess

    sub = Subscriber(broker, "dead/status", client_id="will-watcher")
    child = tmp_path / "child.py"
    child.write_text(
        "import sys, time, threading\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
        "from test_line_outputs import config, context, build_sinks\n"
        f"s = build_sinks(config(mqtt={broker.url + '/dead'!r}), context()).open()\n"
        "s.runners[0].sink.connected.wait(10)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(child)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout.readline().strip() == "up"
    assert sub.wait_for(lambda s: "online" in s.on("/status"))
    # the board dies, MQTT client and all (a power cut, the OOM killer on the unit): no clean
    # disconnect, so the broker sends the will once the keepalive lapses
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sub.wait_for(lambda s: s.on("/status")[-1:] == ["offline"], timeout=60)
    sub.close()


# --- HTTP --------------------------------------------------------------------------------------


def _get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_metrics_latest_health_and_live_view():
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    cfg = config(http=str(port), stall_seconds=0.5, trigger="def")
    ctx = context(triggers=frozenset({"def"}))
    sinks = build_sinks(cfg, ctx).open()
    base = f"http://127.0.0.1:{port}"
    assert _get(base + "/health")[0] == 503  # no frame yet
    assert _get(base + "/latest")[0] == 503
    s = ctx.summary
    for i in range(30):
        r = record(i, "def" if i % 3 == 0 else "ok")
        s.frames += 1
        s.classified += 1
        s.labels[r.label] += 1
        s.latency.add(r.latency_ms)
        s.last_frame = time.monotonic()
        sinks.publish(r)
    s.add_dropped("mqtt", 3)
    time.sleep(0.05)  # the view takes at most 30 frames a second: this one is taken
    sinks.publish(record(29, "def"))
    time.sleep(0.2)
    code, body = _get(base + "/health")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, body = _get(base + "/latest")
    assert code == 200 and json.loads(body)["frame"] == 29
    code, body = _get(base + "/metrics")
    assert code == 200
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    value = {f: {tuple(sorted(x.labels.items())): x.value for x in fams[f].samples} for f in fams}
    assert value["edgecls_frames"][()] == 30
    assert value["edgecls_label_frames"][(("label", "def"),)] == 10
    assert value["edgecls_outputs_dropped"][(("output", "mqtt"),)] == 3
    hist = fams["edgecls_inference_latency_milliseconds"].samples
    lat = {x.labels.get("le"): x.value for x in hist if x.name.endswith("_bucket")}
    assert lat["1.0"] == 0 and lat["2.0"] == 30 and lat["+Inf"] == 30
    assert "edgecls_drift_score" in fams and "edgecls_fps" in fams
    # the live view: OpenCV reads frames from the MJPEG stream
    feeder = threading.Thread(
        target=lambda: [(sinks.publish(record(100 + i)), time.sleep(0.02)) for i in range(150)],
        daemon=True,
    )
    feeder.start()
    cap = cv2.VideoCapture(base + "/", cv2.CAP_FFMPEG)
    assert cap.isOpened()
    ok, frame = cap.read()
    assert ok and frame.shape == (48, 64, 3)
    cap.release()
    feeder.join()
    # a viewer's own rate: frames arrive 50 a second throughout, the view sends 2 a second
    viewing = threading.Event()

    def feed():
        i = 300
        while not viewing.is_set():
            sinks.publish(record(i))
            i += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as view:
        view.sendall(b"GET /?fps=2 HTTP/1.1\r\nHost: board\r\n\r\n")
        got, until = b"", time.monotonic() + 1.6
        while time.monotonic() < until:
            view.settimeout(max(0.01, until - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                got += view.recv(1 << 16)
    viewing.set()
    feeder.join()
    assert 2 <= got.count(b"Content-Type: image/jpeg") <= 4  # the default 5 a second: 8 or 9
    for bad in ("0.1", "31", "fast", "nan", ""):
        code, body = _get(f"{base}/?fps={bad}")
        assert code == 400 and json.loads(body)["error"].startswith(f"fps={bad}: give frames")
    time.sleep(0.7)  # longer than stall_seconds without a frame
    code, body = _get(base + "/health")
    assert code == 503 and "stalled" in json.loads(body)["status"]
    sinks.close()


def test_http_auth_guards_everything_but_health():
    port = free_port()
    cfg = config(http=f"127.0.0.1:{port}", http_token="t0ken", http_user="ops:pw")
    ctx = context()
    sinks = build_sinks(cfg, ctx).open()
    base = f"http://127.0.0.1:{port}"
    import base64

    basic = "Basic " + base64.b64encode(b"ops:pw").decode()
    try:
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/metrics", {"Authorization": "Bearer nope"})[0] == 401
        assert _get(base + "/metrics", {"Authorization": "Bearer t0ken"})[0] == 200
        assert _get(base + "/metrics", {"Authorization": basic})[0] == 200
        assert _get(base + "/health")[0] == 503  # open, and no frame yet
    finally:
        sinks.close()
    busy = build_sinks(config(http=str(port)), context()).open()
    try:
        with pytest.raises(EdgeclsError, match=r"cannot listen .*; choose another port"):
            build_sinks(config(http=str(port)), context()).open()
    finally:
        busy.close()
    # an address this machine does not have (TEST-NET-1): the host is wrong, not the port
    with pytest.raises(EdgeclsError, match=r"--http 192\.0\.2\.1:.*; check the host"):
        build_sinks(config(http=f"192.0.2.1:{port}", http_token="t"), context()).open()


def test_http_listens_on_an_ipv6_address():
    port, logs = free_port(), []
    sinks = build_sinks(config(http=f"[::1]:{port}"), context(logs)).open()
    try:
        assert any(f"http://[::1]:{port}/" in m for m in logs), logs
        assert _get(f"http://[::1]:{port}/health")[0] == 503  # listening; no frame yet
    finally:
        sinks.close()


def test_mqtts_with_a_ca_file_reaches_a_tls_broker(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    tls = {"cafile": certs["ca"], "certfile": certs["cert"], "keyfile": certs["key"]}
    broker = Mosquitto(tmp_path / "broker", settings=tls).start()
    logs = []
    try:
        url = f"mqtts://127.0.0.1:{broker.port}/secure"
        cfg = config(mqtt=url, mqtt_ca=str(certs["ca"]))
        sinks = build_sinks(cfg, context(logs)).open()
        (mqtt,) = [r.sink for r in sinks.runners]
        assert mqtt.connected.wait(10), logs
        sinks.publish(record(0))
        sinks.close()
        assert not sinks.context.summary.outputs_dropped
        # without the CA the broker's certificate is not trusted: it never connects, and says
        # why (not "no broker": one answered)
        said = []
        bad = build_sinks(config(mqtt=url), context(said)).open()
        assert not bad.runners[0].sink.connected.wait(2)
        bad.close()
        assert any("TLS with 127.0.0.1" in m and "check --mqtt-ca" in m for m in said), said
        assert not any("no broker" in m for m in said), said
    finally:
        broker.stop()
    with pytest.raises(EdgeclsError, match=r"--mqtt-ca .*no such file"):
        config(mqtt=url, mqtt_ca=str(tmp_path / "missing.crt"))


def test_mqtt_user_and_password_reach_a_broker_that_asks_for_them(tmp_path):
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "line", "s3cr:t"],
        check=True, capture_output=True,
    )  # fmt: skip
    passwords.chmod(0o600)
    settings = {"allow_anonymous": "false", "password_file": passwords}
    broker = Mosquitto(tmp_path / "broker", settings=settings).start()
    try:
        sub = Subscriber(broker, "auth/#", auth=("line", "s3cr:t"))
        logs = []
        url = f"mqtt://line:s3cr%3At@127.0.0.1:{broker.port}/auth"  # a `:` in it, URL-quoted
        sinks = build_sinks(config(mqtt=url), context(logs)).open()
        assert sinks.runners[0].sink.connected.wait(10), logs
        sinks.publish(record(7))
        assert sub.wait_for(lambda s: [r["frame"] for r in s.on("/records")] == [7])
        sinks.close()
        sub.close()
        # a wrong password: refused, said once (not once per retry), and the loop runs on
        said = []
        wrong = f"mqtt://line:guess@127.0.0.1:{broker.port}/auth"
        bad = build_sinks(config(mqtt=wrong), context(said)).open()
        assert not bad.runners[0].sink.connected.wait(3.5)  # attempts at 0, 1 and 3 s
        bad.close()
    finally:
        broker.stop()
    refusals = [m for m in said if "refused us" in m]
    assert len(refusals) == 1 and "check the user and password in --mqtt" in refusals[0], said
    assert "Not authorized" in refusals[0], refusals


def test_mqtt_records_of_a_thousand_classes_arrive_whole(broker):
    """An ImageNet-size label set makes each record ~22 KB, so a batch is more than the socket
    takes at once: it is sent on as the socket has room, and every record arrives intact."""
    labels = tuple(f"class_{i:04d}" for i in range(1000))
    identity = Identity("imagenet", "model_int8.tflite", "cd" * 32, labels)
    probs = tuple(np.linspace(0, 1, 1000) / 500)
    records = [
        Record(frame=i, time=time.time(), label=labels[-1], top=labels[-1], confidence=probs[-1],
               probs=probs, latency_ms=9.0, source="cam", identity=identity)
        for i in range(200)
    ]  # fmt: skip
    sub = Subscriber(broker, "big/records")
    ctx = SinkContext(Summary(), threading.Event(), [].append, identity, live=False)
    sinks = build_sinks(config(mqtt=f"{broker.url}/big"), ctx).open()
    assert sinks.runners[0].sink.connected.wait(10)
    for r in records:
        sinks.publish(r)
    assert sub.wait_for(lambda s: len(s.on("/records")) >= 200, 30)
    sinks.close()
    sub.close()
    got = sub.on("/records")
    assert [r["frame"] for r in got] == list(range(200))
    assert all(r == records[0].to_dict() | {"frame": r["frame"], "time": r["time"]} for r in got)
    assert len(json.dumps(got[0])) > 20_000
    assert not ctx.summary.outputs_dropped
