"""The loop's output side end to end, with a real model: records to MQTT on a real mosquitto
(restarted mid-run), the HTTP view/metrics/health on a live MJPEG camera that stalls, ROI,
decisions, drift from the bundle's reference, and outputs that fail (full disk, read-only folder)
without stopping the loop."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from brokers import Mosquitto, Subscriber
from mjpeg_server import MjpegServer, free_port
from typer.testing import CliRunner
from videos import write_video

from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.runtime.loop import run
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.sources import Source, open_source

CLASSES = ["beetles", "cockroach", "dragonflies"]


@pytest.fixture(scope="module")
def bundle(insects_run, insects_data, tmp_path_factory) -> Path:
    """The insect model as a float32 TFLite bundle (quick to export), with drift reference
    statistics of its training images in the manifest."""
    from edgecls.bundle.backends import load_predictor
    from edgecls.bundle.drift import reference_stats
    from edgecls.bundle.preprocess import frame_to_input

    out = tmp_path_factory.mktemp("loop-outputs") / "insects"
    args = ["export", str(insects_run), "--out", str(out), "--format", "tflite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    if not manifest.get("drift_reference"):
        images = sorted((insects_data / "train").rglob("*.jpg"))
        x = np.stack([frame_to_input(cv2.imread(str(p)), (64, 64)) for p in images])
        probs = load_predictor(out / "model_float32.tflite").predict(x)
        manifest["drift_reference"] = reference_stats(x, probs, manifest["labels"])
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="module")
def video(insects_data, tmp_path_factory) -> Path:
    """Test images of every class, 2 frames each, 96x96 at 20 FPS (~150 frames)."""
    path = tmp_path_factory.mktemp("video") / "line.mp4"
    write_video(path, sorted((insects_data / "test").rglob("*.jpg")), repeat=2, fps=20.0)
    return path


def options(bundle, source, **kw) -> LoopOptions:
    return LoopOptions(bundle=bundle, source=str(source), headless=True, **kw)


class Lines:
    def __init__(self):
        self.rows = []

    def write(self, s):
        self.rows.append(json.loads(s))

    def flush(self):
        pass


class Paced(Source):
    """A file source read at a camera's pace, so a test can act while the loop runs."""

    def __init__(self, source, seconds: float):
        self.source, self.seconds = source, seconds
        self.name, self.live, self.reconnects = source.name, False, 0

    def read(self):
        time.sleep(self.seconds)
        return self.source.read()

    def close(self):
        self.source.close()


def test_every_record_reaches_mqtt_across_a_broker_restart(bundle, video, tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker, "line/1/#")
    logs = []
    restarted = threading.Event()

    def restart_midway():
        sub.wait_for(lambda s: len(s.on("/records")) >= 30, 60)
        broker.restart()
        restarted.set()

    threading.Thread(target=restart_midway, daemon=True).start()
    cfg = options(bundle, video, mqtt=f"{broker.url}/line/1", trigger="beetles", consecutive=2)
    source = Paced(open_source(str(video)), 0.01)
    try:
        summary = run(cfg.to_config(), log=logs.append, source=source)
        assert restarted.is_set()
        assert sub.wait_for(
            lambda s: len({r["frame"] for r in s.on("/records")}) == summary.classified, 30
        )
        decisions = sub.on("/decisions")
        assert summary.decisions >= 1 and len({d["frame"] for d in decisions}) == summary.decisions
        assert sub.wait_for(lambda s: s.on("/status")[-1:] == ["offline"])
    finally:
        sub.close()
        broker.stop()
    frames = {r["frame"] for r in sub.on("/records")}
    assert frames == set(range(summary.frames)) and not summary.outputs_dropped
    assert any("lost the broker" in m for m in logs) and any("reconnected" in m for m in logs)
    row = sub.on("/records")[-1]
    assert row["artifact"] == "model_float32.tflite" and len(row["sha256"]) == 64
    assert set(row["probs"]) == set(CLASSES) and row["bundle"]


def test_without_a_broker_the_loop_runs_on_and_says_so(bundle, video):
    logs = []
    cfg = options(bundle, video, mqtt=f"mqtt://127.0.0.1:{free_port()}/x", mqtt_queue=10)
    summary = run(cfg.to_config(), log=logs.append)
    assert summary.classified == summary.frames > 100
    assert any("no broker at 127.0.0.1" in m for m in logs)
    assert summary.outputs_dropped["mqtt"] >= summary.classified - 10
    assert "dropped: mqtt" in logs[-1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except urllib.error.URLError:  # not listening yet
        return 0, b""


def _wait_status(url, code, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get(url)[0] == code:
            return True
        time.sleep(0.1)
    return False


def test_http_on_a_live_camera_that_stalls(bundle, insects_data):
    """The loop on an IP camera (local MJPEG server): /metrics, /latest and the live view while
    frames flow; /health turns 503 when the camera stalls; SIGTERM ends it all."""
    from prometheus_client.parser import text_string_to_metric_families

    frames = [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:10]]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    seen = {}
    with MjpegServer(frames, fps=20) as cam:

        def probe():
            try:
                seen["flowing"] = _wait_status(base + "/health", 200)
                seen["metrics"] = _get(base + "/metrics")[1].decode()
                seen["latest"] = json.loads(_get(base + "/latest")[1])
                cap = cv2.VideoCapture(base + "/", cv2.CAP_FFMPEG)
                seen["view"] = cap.read()[1] if cap.isOpened() else None
                cap.release()
                cam.stall()
                seen["stalled"] = _wait_status(base + "/health", 503)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # whatever happened, end the loop

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        cfg = options(bundle, cam.url, http=str(port), stall_seconds=1.0, trigger="beetles")
        summary = run(cfg.to_config(), log=lambda m: None)
        thread.join(5)
    assert seen["flowing"]
    fams = {f.name: f for f in text_string_to_metric_families(seen["metrics"])}
    assert fams["edgecls_frames"].samples[0].value >= 1
    want = {"edgecls_label_frames", "edgecls_inference_latency_milliseconds", "edgecls_fps"}
    want |= {"edgecls_drift_score", "edgecls_outputs_dropped", "edgecls_reconnects"}
    assert want <= set(fams)
    assert seen["latest"]["label"] in CLASSES and seen["latest"]["source"] == cam.url
    assert seen["view"] is not None and seen["view"].shape == frames[0].shape
    assert seen["stalled"] and summary.classified >= 1


def test_roi_crops_before_preprocessing_and_is_in_every_record(bundle, video):
    out = Lines()
    run(options(bundle, video, json=True, roi="8,8,80,80").to_config(), out=out, log=print)
    assert out.rows and all(r["roi"] == [8, 8, 80, 80] for r in out.rows)
    full = Lines()
    run(options(bundle, video, json=True).to_config(), out=full, log=print)
    assert full.rows[0]["roi"] is None
    assert [r["probs"] for r in out.rows] != [r["probs"] for r in full.rows]  # it saw less
    with pytest.raises(EdgeclsError, match="--roi 0,0,500,500: outside the 96x96 frame"):
        run(options(bundle, video, roi="0,0,500,500").to_config(), log=print)


def test_drift_from_the_bundle_reference_warns_on_a_dark_scene(bundle, insects_data, tmp_path):
    images = sorted((insects_data / "test").rglob("*.jpg"))
    dark = tmp_path / "dark"
    dark.mkdir()
    for i in range(4):
        for p in images:
            cv2.imwrite(str(dark / f"{i}_{p.name}"), (cv2.imread(str(p)) * 0.4).astype(np.uint8))
    logs = []
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        cfg = options(bundle, dark, drift_window=100, mqtt=f"{broker.url}/trap")
        summary = run(cfg.to_config(), log=logs.append)
        late = Subscriber(broker, "trap/drift", client_id="dashboard")  # after the run
        try:
            assert late.wait_for(lambda s: s.on("/drift"), 10)
            retained = late.messages[-1]
        finally:
            late.close()
    finally:
        broker.stop()
    assert summary.drift["state"] == "drift" and summary.drift["score"] >= 1.0
    assert retained[2] and retained[1] == summary.drift  # the run's last state, kept for later
    assert sum("warning: drift score" in m for m in logs) == 1
    assert "drift" in logs[-1]
    normal = run(options(bundle, insects_data / "test", drift_window=100).to_config(), log=print)
    assert normal.drift["state"] == "ok"


def test_saved_frames_survive_a_full_disk_and_a_restart(bundle, video, tmp_path, monkeypatch):
    from edgecls.runtime.sinks import frames

    save = tmp_path / "saved"
    first = run(options(bundle, video, save_dir=str(save)).to_config(), log=print)
    assert first.saved == first.classified
    real, calls = frames.FramesSink._write, []

    def full_disk(self, path, data):
        calls.append(path)
        if len(calls) % 3 == 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, data)

    monkeypatch.setattr(frames.FramesSink, "_write", full_disk)
    logs = []
    again = run(options(bundle, video, save_dir=str(save)).to_config(), log=logs.append)
    failed = again.output_errors["frames"]
    assert failed == again.classified // 3 and again.saved == again.classified - failed
    assert again.classified == first.classified  # the loop went on to the end
    assert len(list(save.glob("edgecls-*.jpg"))) == first.saved + again.saved  # no overwrite
    assert sum("output frames failed" in m for m in logs) == 1
    assert f"output errors: frames {failed}" in logs[-1]


def test_unwritable_outputs_are_one_line_errors_before_the_source_opens(bundle, video, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args, match in (
        (["--save-dir", str(blocker / "frames")], "--save-dir"),
        (["--record", str(blocker / "out.mp4")], "--record"),
        (["--save-labels", "wasps"], "--save-labels wasps"),
        (["--trigger", "wasps"], "--trigger wasps"),
        (["--roi", "1,2"], "--roi"),
    ):
        result = CliRunner().invoke(app, ["run", str(bundle), "--source", str(video), *args])
        assert result.exit_code == 2, result.output
        lines = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and match in lines[0] and "Traceback" not in result.output


def test_outputs_over_the_source_or_into_the_bundle_are_refused(bundle, video, tmp_path):
    """A recording over the video it plays truncated it to a few frames; a log into the bundle
    appended to its manifest. Both are refused before anything is opened, and nothing changes."""
    source = tmp_path / "line.mp4"
    source.write_bytes(video.read_bytes())
    manifest = bundle / "manifest.json"
    before = (source.read_bytes(), manifest.read_bytes(), sorted(bundle.iterdir()))
    for args, match in (
        (["--record", str(source)], "--record"),
        (["--record", str(tmp_path / "." / "line.mp4")], "--record"),  # the same file, spelt apart
        (["--json", "--log-file", str(manifest)], "--log-file"),
        (["--save-dir", str(bundle / "frames")], "--save-dir"),
    ):
        result = CliRunner().invoke(app, ["run", str(bundle), "--source", str(source), *args])
        assert result.exit_code == 2, result.output
        lines = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and match in lines[0] and "which the run reads" in lines[0]
        assert "Traceback" not in result.output
    assert (source.read_bytes(), manifest.read_bytes(), sorted(bundle.iterdir())) == before


def test_recording_runs_at_the_video_frame_rate(bundle, video, tmp_path):
    out = tmp_path / "rec.mp4"
    summary = run(options(bundle, video, record=str(out), every=2).to_config(), log=print)
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)  # 20 FPS source, every 2nd frame
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == summary.classified


def test_device_file_drives_the_command_and_flags_win(bundle, video, tmp_path):
    hook_out = tmp_path / "hook.txt"
    device = tmp_path / "device.yaml"
    device.write_text(
        f"bundle: {bundle}\nsource: {video}\nheadless: true\njson: true\n"
        f"max_frames: 40\ntrigger: [beetles, cockroach]\nconsecutive: 2\n"
        f"on_trigger: {sys.executable} -c \"import sys; open({str(hook_out)!r}, 'a')"
        f'.write(sys.stdin.read() + chr(10))"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgecls", "run", "--config", str(device), "--max-frames", "12"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    records = [r for r in rows if r["type"] == "frame"]
    decisions = [r for r in rows if r["type"] == "decision"]
    assert len(records) == 12 and decisions  # --max-frames on the command line won
    hooked = [json.loads(x) for x in hook_out.read_text().splitlines() if x]
    assert [d["frame"] for d in hooked] == [d["frame"] for d in decisions]
    device.write_text(device.read_text() + "mqtt_queue: many\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgecls", "run", "--config", str(device)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "mqtt_queue: must be a number" in proc.stderr


def test_sigterm_with_outputs_on_ends_quickly_with_the_summary(bundle, insects_data, tmp_path):
    """A live camera that is down, MQTT to nowhere, HTTP on: SIGTERM still ends the run within a
    few seconds with the summary printed."""
    frames = [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:5]]
    with MjpegServer(frames, fps=20) as cam:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgecls", "run", str(bundle), "--source", cam.url,
             "--headless", "--json", "--http", str(free_port()),
             "--mqtt", f"mqtt://127.0.0.1:{free_port()}/x", "--record", str(tmp_path / "r.mp4")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout.readline().startswith("{")
        cam.refuse()  # the camera goes down
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # a hang fails here
    assert proc.returncode == 0, err
    assert "summary:" in err
    cap = cv2.VideoCapture(str(tmp_path / "r.mp4"))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 1


def test_no_tensorflow_in_the_line_outputs_import_graph():
    code = (
        "import sys, edgecls.runtime.loop, edgecls.runtime.sinks as s; s.load_sinks();"
        "import edgecls.runtime.drift, edgecls.runtime.loop_options;"
        "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
