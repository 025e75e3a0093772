"""Anomaly detection trained on good images only (issue 38): it learns, its bundle keeps its
verdicts and its order of scores through int8, and the board flags defective parts through the
same outputs, without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from brokers import Mosquitto, Subscriber
from test_parts import Conveyor, running
from typer.testing import CliRunner
from videos import write_video

from edgecls.bundle.anomaly import auroc, probabilities, rank_correlation, threshold_at
from edgecls.bundle.manifest import ParityThresholds
from edgecls.bundle.parity import ANOMALY_THRESHOLDS, compare
from edgecls.cli import app


def test_trained_on_good_images_alone_it_finds_the_defects(anomaly_run, casting_data):
    metrics = json.loads((anomaly_run / "metrics.json").read_text())
    config = json.loads((anomaly_run / "config.json").read_text())
    test = metrics["test"]
    # measured here: AUROC 0.961, recall 0.90, 1 of 22 good test images rejected
    assert test["defects"] == 30 and test["auroc"] >= 0.9, metrics
    assert test["recall"] >= 0.7 and test["false_reject"] <= 0.2, metrics
    assert metrics["val"]["false_reject"] <= config["max_false_reject"]
    assert config["task"] == "anomaly" and config["threshold"] == metrics["threshold"]
    assert (anomaly_run / "labels.txt").read_text().split() == ["ok", "anomaly"]
    for name in ("scores.png", "roc.png", "history.csv", "predictions.csv", "model.keras"):
        assert (anomaly_run / name).stat().st_size > 0, name
    rows = (anomaly_run / "predictions.csv").read_text().splitlines()[1:]
    assert not [r for r in rows if "/train/def/" in r]  # the known defects are test images only
    assert sum("/test/def/" in r for r in rows) == 30


def test_the_threshold_rejects_at_most_the_asked_share_of_good_images():
    scores = np.random.default_rng(0).normal(size=200)
    for share in (0.0, 0.01, 0.05, 0.2):
        t = threshold_at(scores, share)
        assert (scores >= t).mean() <= share
        assert (scores >= np.sort(scores)[-int(share * 200) - 1]).mean() > share  # the lowest
    assert probabilities(np.array([[0.0], [-1e-9], [3.0]])).argmax(1).tolist() == [1, 0, 1]


def test_the_anomaly_gate_fails_flipped_verdicts_and_a_lost_auroc():
    rng = np.random.default_rng(1)
    good, bad = rng.normal(-2, 1, 100), rng.normal(2, 1, 100)
    reference = np.concatenate([good, bad])
    y = np.array([0] * 100 + [1] * 100)
    probs = lambda m: probabilities(m[:, None])  # noqa: E731
    gates = ANOMALY_THRESHOLDS

    def figures(scores):
        return compare(probs(reference), probs(scores), y, "int8", gates, (reference, scores))

    same = figures(reference + rng.normal(0, 0.01, 200))
    assert same.passed and same.rank_correlation > 0.99 and abs(same.auroc_drop) < 0.001
    near = np.argsort(np.abs(reference))[:5]  # 5 of 200 verdicts flip: agreement 0.975
    flipped = reference.copy()
    flipped[near] = -flipped[near]
    assert any("agreement" in f for f in figures(flipped).failures)
    noisy = figures(reference + rng.normal(0, 1.5, 200))
    assert noisy.auroc_drop > 0.01 and any("AUROC" in f for f in noisy.failures)
    assert auroc(good, bad) == pytest.approx(1 - auroc(bad, good))
    assert rank_correlation(reference, -reference) == pytest.approx(-1)
    assert gates.min_agreement == 0.98 and gates.max_auroc_drop == ParityThresholds().max_auroc_drop


def test_the_bundle_says_it_is_an_anomaly_bundle_and_keeps_its_scores_in_int8(
    anomaly_bundle, anomaly_run
):
    manifest = json.loads((anomaly_bundle / "manifest.json").read_text())
    config = json.loads((anomaly_run / "config.json").read_text())
    assert manifest["task"] == "anomaly" and manifest["labels"] == ["ok", "anomaly"]
    assert manifest["anomaly"]["threshold"] == config["threshold"]
    assert manifest["anomaly"]["map_size"] == [16, 16]
    int8 = [a for a in manifest["artifacts"] if a["precision"] == "int8"]
    assert {a["format"] for a in int8} == {"tflite", "onnx"}
    for a in manifest["artifacts"]:
        p = a["parity"]
        assert a["output"]["values"] == "anomaly"
        assert p["auroc"] is not None and p["auroc_drop"] <= 0.01, (a["file"], p)
        # measured here: rank correlation 0.998-0.999, agreement 1.0 and 0.981 (1 of 52)
        assert p["rank_correlation"] >= 0.99 and p["agreement"] >= 0.94, (a["file"], p)
    parity_md = (anomaly_bundle / "parity.md").read_text()
    assert "AUROC" in parity_md and "verdict" in parity_md


def sure_images(bundle: Path, folder: Path, anomalous: bool, n: int) -> list[Path]:
    """Test images the bundle's int8 TFLite model scores far from its threshold, one way."""
    from edgecls.bundle.backends import load_predictor

    predictor = load_predictor(bundle / "model_int8.tflite")
    paths = sorted(folder.glob("*.jpg"))
    size = predictor.input_size
    x = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], size[::-1]) for p in paths])
    margins = predictor.outputs(x)[:, 0]
    keep = margins > 1 if anomalous else margins < -1
    sure = [p for p, k in zip(paths, keep, strict=True) if k]
    assert len(sure) >= n, (folder, margins)
    return sure[:n]


@pytest.fixture(scope="module")
def line_video(anomaly_bundle, casting_data, tmp_path_factory):
    """Good, defective, good, ... parts in view, 3 frames each: (video, the truth per frame)."""
    good = sure_images(anomaly_bundle, casting_data / "test" / "ok", False, 4)
    bad = sure_images(anomaly_bundle, casting_data / "test" / "def", True, 4)
    order = [p for pair in zip(good, bad, strict=True) for p in pair]
    video = tmp_path_factory.mktemp("line") / "line.mp4"
    write_video(video, order, repeat=3, size=(160, 160))
    return video, [label for label in ("ok", "anomaly") * 4 for _ in range(3)]


def test_run_flags_defective_frames_over_mqtt_without_tensorflow(
    anomaly_bundle, line_video, tmp_path
):
    video, truth = line_video
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker, "line/a/#")
    args = [sys.executable, "-X", "importtime", "-m", "edgecls", "run", str(anomaly_bundle)]
    args += ["--source", str(video), "--headless", "--json", "--backend", "litert"]
    args += ["--mqtt", f"{broker.url}/line/a", "--trigger", "anomaly"]
    args += ["--save-dir", str(tmp_path / "saved"), "--save-labels", "anomaly"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert sub.wait_for(lambda s: len(s.on("/records")) == len(truth), 20)
    finally:
        sub.close()
        broker.stop()
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    frames = [r for r in rows if r["type"] == "frame"]
    assert [r["label"] for r in frames] == truth  # each part's three frames, MJPEG-compressed
    published = sorted(sub.on("/records"), key=lambda r: r["frame"])
    assert [r["label"] for r in published] == truth
    for r in published:
        assert (r["score"] >= r["threshold"]) == (r["label"] == "anomaly"), r
        assert set(r["probs"]) == {"ok", "anomaly"}
    assert sub.on("/decisions")  # the trigger label fires the same decisions as a class
    saved = sorted((tmp_path / "saved").glob("*.jpg"))
    assert len(saved) == truth.count("anomaly")
    image = cv2.imread(str(saved[0]))
    assert image.shape[1] == 2 * image.shape[0]  # the frame, and the same frame with its map
    imported = " ".join(
        line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line
    )
    assert "ai_edge_litert" in imported
    assert not [m for m in imported.split() if m.split(".")[0] in ("tensorflow", "keras")]


def test_a_gpio_trigger_pulses_once_per_anomalous_part(anomaly_bundle, casting_data, tmp_path):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    def frame(path):
        return cv2.resize(cv2.imread(str(path)), (160, 160))

    good = [frame(p) for p in sure_images(anomaly_bundle, casting_data / "test" / "ok", False, 3)]
    bad = [frame(p) for p in sure_images(anomaly_bundle, casting_data / "test" / "def", True, 3)]
    plan = ["ok", "anomaly", "ok", "anomaly", "anomaly", "ok"]
    Device.pin_factory = MockFactory()
    conveyor = Conveyor(good[0])
    try:
        barrier, valve = Device.pin_factory.pin(27), Device.pin_factory.pin(17)
        with running(
            anomaly_bundle, conveyor, tmp_path, part_trigger=["gpio:27"], gpio="17",
            pulse_ms=20, capture_delay_ms=40, capture_frames=2, inspect_window_ms=2000,
            trigger="anomaly",
        ) as (lines, logs, _):  # fmt: skip
            for n, label in enumerate(plan):
                barrier.drive_high()
                time.sleep(0.015)
                conveyor.place((bad if label == "anomaly" else good)[n % 3], f"part{n}")
                barrier.drive_low()
                assert len(lines.wait_parts(n + 1)) == n + 1, logs
            time.sleep(0.3)
            pulses = sum(1 for s in valve.states if s.state)
    finally:
        Device.pin_factory = None
    parts = lines.parts()
    assert [p["label"] for p in parts] == plan, parts
    assert [p["reject"] for p in parts] == [label == "anomaly" for label in plan]
    assert pulses == plan.count("anomaly")
    frames = [r for r in lines.rows if r["type"] == "frame"]
    assert all("score" in r and "threshold" in r for r in frames)


def test_parity_and_benchmark_on_the_board_read_good_and_defect_folders(
    anomaly_bundle, casting_data, tmp_path
):
    bundle = tmp_path / "bundle"
    shutil.copytree(anomaly_bundle, bundle)
    data = casting_data / "test"  # ok/ and def/: ok is good, every other folder a defect
    result = CliRunner().invoke(app, ["parity", str(bundle), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    figures = {a["file"]: a["parity"] for a in report["artifacts"]}
    assert figures["model_float32.tflite"]["agreement"] == 1.0
    assert all(f["auroc"] > 0.85 and f["rank_correlation"] > 0.99 for f in figures.values())
    result = CliRunner().invoke(
        app, ["benchmark", str(bundle), "--data", str(data), "--runs", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["artifacts"]
    assert all(r["accuracy"] > 0.75 for r in rows), rows


@pytest.mark.parametrize(
    "args, message",
    [
        (["--defects", "{good}"], "--defects: only with --task anomaly"),
        (["--task", "anomaly", "--data", "{good}", "--data", "{good}2"], "one folder of good"),
        (["--task", "anomaly", "--data", "{empty}"], "has no usable image"),
        (["--task", "anomaly", "--data", "{few}"], "none to set the threshold on"),
        (["--task", "anomaly", "--data", "{good}", "--img-size", "60"], "multiple of 8"),
        (["--task", "detect", "--data", "{good}"], "--task 'detect': choose one of"),
        (["--task", "anomaly"], "--task anomaly needs a folder of good images"),
        (["--task", "anomaly", "--data", "{good}", "--defects", "{good}"], "overlaps --data"),
    ],
)
def test_bad_anomaly_options_are_one_line_and_write_nothing(tmp_path, args, message):
    folders = {"good": tmp_path / "good", "empty": tmp_path / "empty", "few": tmp_path / "few"}
    for name, n in (("good", 8), ("few", 2)):
        folders[name].mkdir()
        for i in range(n):
            cv2.imwrite(str(folders[name] / f"{i}.png"), np.full((32, 32, 3), 10 * i, np.uint8))
    (folders["good"].parent / "good2").mkdir()
    (folders["empty"]).mkdir()
    (folders["empty"] / "notes.txt").write_text("no images here")
    args = [a.format(**folders) for a in args]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *args, "--out", str(out)])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_the_statistics_path_reads_a_backbone_file_and_exports(casting_data, tmp_path):
    """--weights FILE (here a MobileNetV2 the test makes: ImageNet weights cannot be fetched
    here): feature statistics, no training; its bundle is an anomaly bundle like the other's."""
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), include_top=False, weights=None
    )
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)
    run, good = tmp_path / "run", str(casting_data / "train" / "ok")
    args = ["train", "--task", "anomaly", "--data", good, "--img-size", "64"]
    args += ["--defects", str(casting_data / "test" / "def"), "--out", str(run)]
    result = CliRunner().invoke(app, [*args, "--weights", str(weights)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 0 and metrics["test"]["auroc"] > 0.6  # random features: 0.79
    bundle = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "anomaly" and manifest["anomaly"]["map_size"] == [16, 16]
    from edgecls.bundle.backends import load_predictor
    from edgecls.bundle.preprocess import InputSpec

    rows = [r.split(",") for r in (run / "predictions.csv").read_text().splitlines()[1:9]]
    x = InputSpec(64, 64).load_batch([Path(r[0]) for r in rows])
    scores = load_predictor(bundle / "model_float32.tflite").outputs(x)[:, 0]
    trained = np.array([float(r[2]) for r in rows]) - metrics["threshold"]
    np.testing.assert_allclose(scores, trained, atol=2e-4)  # the backbone's weights went along
    wrong = CliRunner().invoke(
        app, [*args[:-1], str(tmp_path / "run2"), "--weights", str(weights), "--alpha", "0.5"]
    )  # another width: not weights for this backbone
    assert wrong.exit_code != 0 and "--weights" in wrong.output, wrong.output
    assert len(wrong.output.strip().splitlines()) <= 2, wrong.output  # the counts, the error
    assert not (tmp_path / "run2").exists()


def test_the_view_draws_the_anomaly_map_over_what_the_model_saw():
    from edgecls.bundle.anomaly import AnomalySpec
    from edgecls.runtime.records import Identity, Record
    from edgecls.runtime.sinks.overlay import draw

    spec = AnomalySpec(threshold=1.5, map_size=(4, 4), max_false_reject=0.01)
    roi = (100, 80, 80, 80)  # x, y, w, h: each map cell is 20 px of it
    identity = Identity("b", "model_int8.tflite", "0" * 64, ("ok", "anomaly"), roi, spec)
    heat = np.full((4, 4), -6.0, np.float32)
    heat[0, 0] = 4.0  # one cell well above the threshold, top left of the region
    frame = np.full((200, 240, 3), 128, np.uint8)
    record = Record(
        frame=1, time=0.0, label="anomaly", top="anomaly", confidence=0.98, probs=(0.02, 0.98),
        latency_ms=1.0, source="s", identity=identity, image=frame, score=5.5, anomaly_map=heat,
    )  # fmt: skip
    drawn = draw(record, frozenset({"anomaly"}), 10.0, None)
    assert np.array_equal(record.image, frame)  # the frame itself is untouched
    hot, cold = drawn[82:88, 102:108].astype(int), drawn[152:158, 172:178].astype(int)
    assert hot[..., 2].mean() > hot[..., 0].mean() + 40  # red where the map is high
    assert cold[..., 0].mean() > cold[..., 2].mean() + 40  # blue far below the threshold
    assert np.array_equal(drawn[170:, :90], frame[170:, :90])  # outside the region: as it was
    plain = draw(Record(**{**record.__dict__, "anomaly_map": None}), frozenset(), 10.0, None)
    assert np.array_equal(plain[82:88, 102:108], frame[82:88, 102:108])
    assert record.to_dict()["score"] == 5.5 and record.to_dict()["threshold"] == 1.5
    assert "anomaly_map" not in record.to_dict()
