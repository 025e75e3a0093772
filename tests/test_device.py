"""The device side: TF-free runtime, frame sources, the loop, delegates, benchmark, doctor."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner
from videos import write_video

import edgecls.runtime.loop as loop_module
from edgecls.bundle.backends import RuntimeOptions, load_predictor
from edgecls.bundle.folder import Bundle, load_bundle
from edgecls.bundle.preprocess import frame_to_input, load_image
from edgecls.cli import app
from edgecls.runtime.loop import LoopConfig, run
from edgecls.runtime.records import Identity
from edgecls.runtime.sinks.metrics import prometheus_text
from edgecls.runtime.sources import FileSource, LiveSource

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["beetles", "cockroach", "dragonflies"]


@pytest.fixture(scope="module")
def bundle(int8_bundle):
    return int8_bundle


@pytest.fixture(scope="module")
def known_video(bundle, insects_data, tmp_path_factory):
    """A video of test images the model classifies correctly, 3 frames each, with their labels."""
    predictor = load_predictor(bundle / "model_float32.tflite")
    chosen, labels = [], []
    for label, name in enumerate(CLASSES):
        for p in sorted((insects_data / "test" / name).glob("*.jpg")):
            # the frame the device sees went through a video codec: choose on that, not the file
            probs = predictor.predict(load_image(p, (64, 64))[None])[0]
            if probs.argmax() == label and probs.max() > 0.8:
                chosen.append(p)
                labels.append(name)
            if labels.count(name) == 3:
                break
    path = tmp_path_factory.mktemp("video") / "known.mp4"
    write_video(path, chosen, repeat=3)
    return path, [lab for lab in labels for _ in range(3)]


def test_device_path_preprocessing_matches_training_path(insects_data):
    import tensorflow as tf

    from edgecls.folders import Split
    from edgecls.train.pipeline import tf_dataset

    paths = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:4]
    ds = tf_dataset(Split(paths, [0] * 4), (64, 64), batch_size=4)
    trained_on = next(iter(ds))[0].numpy()
    for i, p in enumerate(paths):
        camera_frame = cv2.imread(str(p))  # BGR, as OpenCV delivers frames
        device = frame_to_input(camera_frame, (64, 64))
        assert device.dtype == np.uint8
        assert np.array_equal(device.astype(np.float32), trained_on[i])
    assert tf.reduce_max(trained_on) <= 255.0


def test_loop_labels_every_frame_of_a_known_video(bundle, known_video):
    video, expected = known_video
    lines = []

    class Out:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    logs = []
    summary = run(
        LoopConfig(bundle, str(video), headless=True, json=True), out=Out(), log=logs.append
    )
    rows = [json.loads(s) for s in lines]
    assert [r["frame"] for r in rows] == list(range(len(expected)))
    agree = np.mean([r["label"] == e for r, e in zip(rows, expected, strict=True)])
    assert agree >= 0.9, (rows, expected)
    assert {"frame", "time", "label", "confidence", "latency_ms"} <= set(rows[0])
    assert summary.classified == len(expected) and summary.corrupt == 0
    assert logs[0].startswith("running ") and "chosen:" in logs[0]
    assert logs[-1].startswith("summary:") and "p99" in logs[-1]


def test_the_frame_work_overlaps_the_model_and_changes_no_record(bundle, known_video, monkeypatch):
    """The next frame's crop and resize run on the source's thread while the model works on this
    one; the records are exactly those of the loop doing it all in series, in frame order."""
    video, expected = known_video
    calls = Counter()
    real_frame_work = loop_module.frame_work

    def counting(*args):
        prepare = real_frame_work(*args)
        return lambda image: calls.update([threading.current_thread().name]) or prepare(image)

    monkeypatch.setattr(loop_module, "frame_work", counting)

    def records(source=None):
        lines = []
        out = type("Out", (), {"write": lambda _, s: lines.append(s), "flush": lambda _: None})
        int8 = "model_int8.tflite"
        config = LoopConfig(bundle, str(video), headless=True, json=True, artifact=int8)
        run(config, out=out(), log=lambda m: None, source=source)
        return [json.loads(s) for s in lines]

    overlapped = records()
    on_the_loop = calls[threading.main_thread().name]
    assert sum(calls.values()) - on_the_loop >= len(expected) - 3, calls  # a few read ahead
    calls.clear()
    serial = records(FileSource(str(video)))  # no thread of its own: the loop does the work
    assert calls == {threading.main_thread().name: len(expected)}
    assert [r["frame"] for r in overlapped] == list(range(len(expected)))
    same = ("frame", "label", "probs")
    assert [[r[k] for k in same] for r in overlapped] == [[r[k] for k in same] for r in serial]


def test_a_live_source_prepares_only_its_newest_frame_on_the_capture_thread(insects_data):
    frames = [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:3]]
    source = LiveSource("camera 0", lambda: FlakyCapture(frames, 10**6), log=lambda _: None)
    try:
        source.prepare = lambda image: image[:4, :4, ::-1].copy()
        time.sleep(0.05)
        got = [source.read() for _ in range(10)]
        assert [f.index for f in got] == sorted({f.index for f in got})  # never an older one
        assert all(np.array_equal(f.prepared, f.image[:4, :4, ::-1]) for f in got)
        source.prepare = lambda image: 1 / 0
        time.sleep(0.05)
        assert isinstance(source.read().prepared, ZeroDivisionError)  # raised by the loop
    finally:
        source.close()


@pytest.mark.slow
def test_device_extra_alone_runs_the_loop_without_tensorflow(
    bundle, known_video, insects_data, tmp_path
):
    """A clean venv with only `.[device]`: the loop runs, and -X importtime shows no TensorFlow;
    evaluate works on an artifact (no matplotlib: no PNG), train says what to install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"{ROOT}[device]"], check=True, timeout=900
    )
    video, expected = known_video
    proc = subprocess.run(
        [
            str(py),
            "-X",
            "importtime",
            "-m",
            "edgecls",
            "run",
            str(bundle),
            "--source",
            str(video),
            "--headless",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(expected)
    assert np.mean([r["label"] == e for r, e in zip(rows, expected, strict=True)]) >= 0.9
    imported = [
        line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line
    ]
    assert "ai_edge_litert" in " ".join(imported) or "onnxruntime" in " ".join(imported)
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx")]
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    assert "tensorflow" not in freeze.lower()
    assert "pymodbus" in freeze.lower() and "asyncua" in freeze.lower()  # the PLC's protocols
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < 600e6, f"the device install is {size / 1e6:.0f} MB"  # a few hundred MB
    assert "scikit-learn" not in freeze.lower()  # evaluate's metrics are numpy

    def edgecls(*args):
        cmd = [str(py), "-m", "edgecls", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    report = tmp_path / "eval"
    evaluated = edgecls(
        "evaluate", str(bundle / "model_int8.tflite"), "--data", str(insects_data),
        "--out", str(report),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n"] > 0 and metrics["accuracy"] > 0.5 and "matplotlib" in str(metrics)
    trained = edgecls("train", "--data", str(insects_data), "--out", str(tmp_path / "run"))
    lines = [line for line in trained.stderr.splitlines() if line.startswith("error:")]
    assert trained.returncode == 2 and len(lines) == 1 and "edgecls[train]" in lines[0]
    assert "Traceback" not in trained.stderr and not (tmp_path / "run").exists()


class FlakyCapture:
    """A capture that delivers `n` frames then fails, like a camera unplugged mid-stream."""

    def __init__(self, frames, n):
        self.frames, self.n, self.i = frames, n, 0

    def isOpened(self):
        return True

    def read(self):
        if self.i >= self.n:
            return False, None
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        time.sleep(0.002)
        return True, frame

    def release(self):
        pass


class Closed:
    def isOpened(self):
        return False

    def release(self):
        pass


def test_live_source_that_drops_is_reopened_and_the_loop_goes_on(bundle, insects_data):
    frames = [
        cv2.imread(str(p))
        for p in sorted((insects_data / "test" / "dragonflies").glob("*.jpg"))[:5]
    ]
    attempts = []

    def opener():
        attempts.append(time.time())
        if len(attempts) == 2:
            return Closed()  # the first reopen fails: back-off, try again
        return FlakyCapture(frames, 15 if len(attempts) == 1 else 10**6)

    logs = []
    source = LiveSource("camera 0", opener, frame_timeout=1.0, log=logs.append)
    summary = run(
        LoopConfig(bundle, "camera 0", headless=True, max_frames=25), log=logs.append, source=source
    )
    text = "\n".join(logs)
    assert "stopped delivering frames; reopening" in text and "reopened" in text
    assert summary.reconnects == 1 and len(attempts) == 3
    assert summary.classified == 25  # more than one capture's worth: the loop went on


def test_a_camera_faster_than_the_model_skips_older_frames_and_says_how_many(
    bundle, insects_data, monkeypatch
):
    frames = [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:3]]
    real_choose = loop_module.choose

    def slow_model(*args, **kwargs):  # 20 ms a frame; the capture gives one every 2 ms
        choice = real_choose(*args, **kwargs)
        predict = choice.predictor.predict
        choice.predictor.predict = lambda x: (time.sleep(0.02), predict(x))[1]
        return choice

    monkeypatch.setattr(loop_module, "choose", slow_model)
    source = LiveSource("camera 0", lambda: FlakyCapture(frames, 10**6), log=lambda _: None)
    logs = []
    config = LoopConfig(bundle, "camera 0", headless=True, max_frames=10)
    summary = run(config, log=logs.append, source=source)
    assert summary.skipped >= 10 and summary.classified == 10
    assert f"skipped {summary.skipped} older camera frames" in logs[-1]
    metrics = prometheus_text(summary, Identity("b", "a", "s", ("x",)), 1.0)
    assert f"edgecls_skipped_frames_total {summary.skipped}" in metrics


@pytest.mark.parametrize(
    ("stop", "code"),
    # Ctrl-C and a closed terminal interrupt; systemctl stop is the service's normal end; under
    # nohup (SIGHUP ignored from the start) a closed terminal leaves it running, and SIGTERM ends it
    [(signal.SIGINT, 130), (signal.SIGTERM, 0), (signal.SIGHUP, 129), ("nohup", 0)],
    ids=["sigint", "sigterm", "sighup", "nohup"],
)
def test_a_signal_flushes_outputs_and_prints_the_summary(
    bundle, insects_data, tmp_path, stop, code
):
    images = sorted((insects_data / "test").rglob("*.jpg"))[:30]
    video = tmp_path / "long.mp4"
    write_video(video, images, repeat=200, size=(96, 96))  # 6000 frames: still running at SIGINT
    save = tmp_path / "saved"
    record = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecls",
            "run",
            str(bundle),
            "--source",
            str(video),
            "--headless",
            "--json",
            "--save-dir",
            str(save),
            "--save-labels",
            "beetles,cockroach",
            "--record",
            str(record),
            "--artifact",
            "model_int8.tflite",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        if stop == "nohup"
        else None,
    )
    first = proc.stdout.readline()
    assert first.startswith("{"), proc.stderr.read()
    time.sleep(0.5)
    if stop == "nohup":
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)  # a stop would have begun by now
        assert proc.poll() is None  # still running
        stop = signal.SIGTERM
    proc.send_signal(stop)
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == code, errs
    lines = [first, *out.splitlines()]
    assert 1 < len(lines) < 6000
    assert "summary:" in errs and "FPS" in errs
    cap = cv2.VideoCapture(str(record))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 1
    saved = list(save.glob("*.jpg"))
    assert saved and all(("beetles" in p.name) or ("cockroach" in p.name) for p in saved)


def test_corrupt_frames_are_skipped_and_counted(bundle, insects_data, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:4]:
        shutil.copy(p, folder / p.name)
    (folder / "beetles_0002.jpg").write_bytes(b"\xff\xd8 broken")
    summary = run(LoopConfig(bundle, str(folder), headless=True), log=lambda m: None)
    assert summary.frames == 4 and summary.corrupt == 1 and summary.classified == 3


def test_bad_source_tampered_artifact_unknown_delegate_are_one_line_errors(
    bundle, known_video, tmp_path
):
    video, _ = known_video
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    with open(tampered / "model_float32.tflite", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    runner = CliRunner()
    cases = [
        (["run", str(bundle), "--source", str(tmp_path / "missing.mp4"), "--headless"], "--source"),
        (["run", str(bundle), "--source", "7", "--headless"], "cannot open", 1),  # may come
        (
            [
                "run",
                str(tampered),
                "--source",
                str(video),
                "--headless",
                "--artifact",
                "model_float32.tflite",
            ],
            "sha256 differs",
        ),
        (["run", str(bundle), "--source", str(video), "--delegate", "tpu9000"], "tpu9000"),
        (["run", str(tmp_path), "--source", str(video)], "not a bundle"),
    ]
    for args, expected, *code in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == (code or [2])[0], (args, result.output)
        assert expected in result.output and "Traceback" not in result.output, result.output
        assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_failed_artifact_is_refused_unless_allowed(bundle, known_video, tmp_path):
    video, _ = known_video
    failed = tmp_path / "failed"
    shutil.copytree(bundle, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        if a["file"] == "model_int8.tflite":
            a["parity"]["failures"] = ["accuracy drop 5.00 points > 1.0"]
    (failed / "manifest.json").write_text(json.dumps(manifest))
    args = [
        "run",
        str(failed),
        "--source",
        str(video),
        "--headless",
        "--artifact",
        "model_int8.tflite",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "failed its parity gate" in result.output
    result = CliRunner().invoke(app, [*args, "--allow-failed", "--max-frames", "2"])
    assert result.exit_code == 0, result.output
    assert "parity was checked" not in result.output  # exported on this architecture


def test_a_bundle_never_checked_on_this_architecture_says_so(bundle, known_video, tmp_path):
    import platform

    video, _ = known_video
    elsewhere = shutil.copytree(bundle, tmp_path / "elsewhere")
    manifest = json.loads((elsewhere / "manifest.json").read_text())
    manifest["parity"]["checked_on"] = ["riscv64"]
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    args = ["run", str(elsewhere), "--source", str(video), "--headless", "--max-frames", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"parity was checked on riscv64, not on {platform.machine()}" in result.output
    assert "--record" in result.output

    figures = {"accuracy": 0.5, "agreement": 0.5, "max_abs_prob_diff": 0.5, "runtime": "test"}
    manifest["parity"]["device_checks"] = [
        {
            "architecture": platform.machine(),
            "board": "test bench",
            "date": "d",
            "data": "somewhere",
            "n": 10,
            "reference": "model_float32.tflite",
            "artifacts": {"model_int8.tflite": {**figures, "failures": ["agreement 0.5 < 0.97"]}},
        }
    ]
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, args)
    assert f"parity FAILED on {platform.machine()} (test bench" in result.output


def test_missing_delegate_falls_back_with_one_warning_or_fails_under_strict(bundle, known_video):
    video, _ = known_video
    logs = []
    opts = RuntimeOptions(delegate="edgetpu")
    summary = run(
        LoopConfig(bundle, str(video), runtime=opts, headless=True, max_frames=3), log=logs.append
    )
    warnings = [m for m in logs if m.startswith("warning: delegate 'edgetpu' could not be loaded")]
    assert len(warnings) == 1 and "falling back to CPU" in warnings[0]
    assert summary.classified == 3 and "LiteRT" in logs[1]
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(bundle),
            "--source",
            str(video),
            "--delegate",
            "edgetpu",
            "--strict",
            "--headless",
        ],
    )
    assert result.exit_code == 2 and "--strict" in result.output


def test_auto_picks_the_fastest_passed_artifact_and_caches_it(bundle, monkeypatch, tmp_path):
    import edgecls.runtime.select as select

    monkeypatch.setenv("EDGECLS_CACHE", str(tmp_path))
    b = load_bundle(bundle)
    first = select.choose(b)
    assert "fastest loop measured" in first.reason and "(cached)" not in first.reason
    measured = dict(re.findall(r"(model_\S+ x\d+(?: serial)?) (\d+) FPS", first.reason))
    runs = select.candidate_runs(b.artifacts, select.RuntimeOptions())
    assert set(measured) == {c.key for c in runs}  # at all cores, overlapped and in series
    assert {c.threads for c in runs} == {os.cpu_count(), max(1, os.cpu_count() - 1)}
    fastest = next(iter(measured))  # listed fastest first: the choice
    assert int(measured[fastest]) == max(map(int, measured.values()))
    assert fastest == f"{first.artifact.file} x{first.threads}" + " serial" * (not first.overlap)
    loads, real_load = [], Bundle.load

    def load(self, artifact, *rest):
        loads.append(artifact)
        return real_load(self, artifact, *rest)

    monkeypatch.setattr(Bundle, "load", load)
    again = select.choose(b)
    assert "(cached)" in again.reason and again.artifact.file == first.artifact.file
    assert loads == [again.artifact]  # a cached start loads only the chosen artifact
    assert select.choose(b, backend="onnxruntime").artifact.format == "onnx"


@pytest.mark.parametrize("onnx_int8,chosen", [("s8s8", "int8"), ("u8u8", "float32")])
def test_on_tensorrt_auto_prefers_int8_onnx_only_in_the_form_tensorrt_takes(
    bundle, monkeypatch, tmp_path, onnx_int8, chosen
):
    """A stand-in for a Jetson: the provider list says TensorRT (the artifact then loads on the
    CPU provider, as ONNX Runtime falls back here). Untested on a real GPU."""
    import edgecls.runtime.select as select

    copy = shutil.copytree(bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["calibration"]["onnx_int8"] = onnx_int8
    (copy / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(select, "_gpu_providers", lambda: ["TensorrtExecutionProvider"])
    choice = select.choose(load_bundle(copy))
    assert choice.artifact.format == "onnx" and choice.artifact.precision == chosen
    assert "TensorrtExecutionProvider" in choice.reason


def test_benchmark_and_doctor(bundle, insects_data):
    runner = CliRunner()
    result = runner.invoke(
        app, ["benchmark", str(bundle), "--data", str(insects_data), "--runs", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["artifacts"]) == 4
    for r in report["artifacts"]:
        assert (
            r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["fps"] > 0 and 0 <= r["accuracy"] <= 1
        )
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    assert d["architecture"] and d["cores"] == os.cpu_count()
    assert d["runtimes"]["ai-edge-litert"] and "CPUExecutionProvider" in d["onnxruntime_providers"]
