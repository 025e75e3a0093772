import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.bundle.backends import load_predictor
from edgecls.bundle.folder import sha256
from edgecls.bundle.preprocess import load_image
from edgecls.cli import app
from edgecls.errors import EdgeclsError

CLASSES = ["beetles", "cockroach", "dragonflies"]


@pytest.mark.int8
def test_int8_bundle_holds_proven_artifacts(int8_bundle):
    files = {p.name for p in int8_bundle.iterdir()}
    assert {
        "model_float32.tflite",
        "model_int8.tflite",
        "model_float32.onnx",
        "model_int8.onnx",
        "manifest.json",
        "parity.md",
        "labels.txt",
    } <= files
    assert not any(p.name.startswith(".") for p in int8_bundle.parent.iterdir())  # no temp left
    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert m["schema_version"] == 2 and m["labels"] == CLASSES
    assert m["input"]["height"] == 64 and m["input"]["color"] == "RGB"
    assert m["input"]["preprocessing"] == "rgb8-stretch-area-linear-exact/2"
    by = {(a["format"], a["precision"]): a for a in m["artifacts"]}
    for a in m["artifacts"]:
        assert a["sha256"] == sha256(int8_bundle / a["file"])
        assert a["bytes"] == (int8_bundle / a["file"]).stat().st_size
        assert {"accuracy", "accuracy_drop", "agreement", "max_abs_prob_diff", "failures"} <= set(
            a["parity"]
        )
        assert "passed" not in a["parity"]  # derived from the failures, not stored twice
        assert a["parity"]["failures"] == [], a
    for fmt in ("tflite", "onnx"):
        assert by[(fmt, "float32")]["parity"]["max_abs_prob_diff"] <= 1e-4
        assert by[(fmt, "int8")]["parity"]["accuracy_drop"] <= 1.0
    assert by[("tflite", "int8")]["bytes"] <= 0.3 * by[("tflite", "float32")]["bytes"]
    assert by[("tflite", "int8")]["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    assert {a["output"]["values"] for a in m["artifacts"]} == {"logits"}  # softmax on the device
    assert m["calibration"]["onnx_int8"] == "u8u8"
    assert "All artifacts passed" in (int8_bundle / "parity.md").read_text()


@pytest.mark.int8
def test_int8_tflite_takes_decoded_pixels_straight_in(int8_bundle, insects_run, insects_data):
    from ai_edge_litert.interpreter import Interpreter

    from edgecls.keras_predictor import KerasPredictor

    interpreter = Interpreter(model_path=str(int8_bundle / "model_int8.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)
    assert interpreter.get_signature_list()["serving_default"]["outputs"] == ["logits"]
    keras_model = KerasPredictor(insects_run / "model.keras")
    paths = sorted((insects_data / "test").rglob("*.jpg"))[::4]
    agree, diffs = 0, []
    for p in paths:
        pixels = load_image(p, (64, 64))  # decoded uint8 RGB, nothing else
        interpreter.set_tensor(inp["index"], pixels[None])
        interpreter.invoke()
        scale, zero = out["quantization"]
        logits = (interpreter.get_tensor(out["index"]).astype(np.float64) - zero) * scale
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        ref = keras_model.predict(pixels[None])
        agree += int(probs.argmax() == ref.argmax())
        diffs.append(float(np.abs(probs - ref).max()))
    assert agree / len(paths) >= 0.9
    assert np.mean(diffs) < 0.1


def test_wrong_calibration_preprocessing_is_caught(insects_run, tmp_path, monkeypatch):
    """Pixels in [0, 1] instead of [0, 255] during calibration: the classic silent int8 failure."""
    from edgecls.export.context import ExportContext

    original = ExportContext.calibration_batches

    def scaled_wrong(self):
        for batch in original(self):
            yield batch / 255.0

    monkeypatch.setattr(ExportContext, "calibration_batches", scaled_wrong)
    out = tmp_path / "bad"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(insects_run),
            "--int8",
            "--format",
            "tflite",
            "--out",
            str(out),
            "--calibration-size",
            "60",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "parity gate failed" in result.output
    m = json.loads((out / "manifest.json").read_text())
    by = {a["precision"]: a["parity"] for a in m["artifacts"]}
    assert not by["float32"]["failures"] and by["int8"]["failures"]
    assert "FAIL" in (out / "parity.md").read_text()


def strict_copy(bundle, dest):
    """A copy of the bundle whose float32 gate is exact: the float32 ONNX artifact, 1e-7 away
    from the float32 TFLite reference, then fails it for real."""
    copy = shutil.copytree(bundle, dest)
    m = json.loads((copy / "manifest.json").read_text())
    m["parity"]["thresholds"]["float_tolerance"] = 0.0
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


def test_parity_command_rechecks_a_bundle_without_tensorflow(int8_bundle, insects_data, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from edgecls.runtime.parity_check import check_bundle\n"
        f"r = check_bundle({str(int8_bundle)!r}, {str(insects_data / 'test')!r})\n"
        "print(json.dumps([f.passed for f in r.figures.values()]))\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    passed, tf_loaded = out.stdout.strip().splitlines()[-2:]
    assert json.loads(passed) == [True] * 4
    assert tf_loaded == "False"
    plain = CliRunner().invoke(app, ["parity", str(int8_bundle), "--data", str(insects_data)])
    result = CliRunner().invoke(
        app, ["parity", str(int8_bundle), "--data", str(insects_data), "--json"]
    )
    report = json.loads(result.stdout)
    assert result.exit_code == plain.exit_code == 0, result.output
    assert [a["file"] for a in report["artifacts"]] == [
        a["file"] for a in json.loads((int8_bundle / "manifest.json").read_text())["artifacts"]
    ]
    assert all(len(a["outputs"]) == report["parity"]["n"] for a in report["artifacts"])
    result = CliRunner().invoke(
        app, ["parity", str(strict_copy(int8_bundle, tmp_path / "b")), "--data", str(insects_data)]
    )
    assert result.exit_code == 1 and "parity gate failed" in result.output
    assert "model_float32.onnx" in result.output and "max |Δprob|" in result.output


def test_parity_record_says_where_the_bundle_was_checked(
    int8_bundle, insects_data, tmp_path, monkeypatch
):
    import os
    import platform

    bundle = strict_copy(int8_bundle, tmp_path / "b")
    hashes = {p.name: sha256(p) for p in bundle.iterdir() if p.suffix in (".tflite", ".onnx")}
    data = str(insects_data / "test")

    def manifest():
        return json.loads((bundle / "manifest.json").read_text())["parity"]

    failing = ["parity", str(bundle), "--data", data, "--record"]
    result = CliRunner().invoke(app, failing)
    assert result.exit_code == 1, result.output
    p = manifest()
    assert p["checked_on"] == [platform.machine()]  # a failed check does not count
    last = p["device_checks"][-1]["artifacts"].values()
    assert any(a["failures"] for a in last) and "FAIL" in (bundle / "parity.md").read_text()

    m = json.loads((bundle / "manifest.json").read_text())
    m["parity"]["thresholds"]["float_tolerance"] = 1e-4  # the export's gate again
    (bundle / "manifest.json").write_text(json.dumps(m))
    result = CliRunner().invoke(app, ["parity", str(bundle), "--data", data, "--record"])
    assert result.exit_code == 0, result.output
    check = manifest()["device_checks"][-1]
    assert not any(a["failures"] for a in check["artifacts"].values())
    assert check["architecture"] == platform.machine() and check["n"] == 300
    assert check["artifacts"]["model_int8.tflite"]["runtime"].startswith("LiteRT")
    assert len(manifest()["device_checks"]) == 2
    assert hashes == {n: sha256(bundle / n) for n in hashes}  # artifacts untouched

    before = (bundle / "manifest.json").read_text()

    def read_only(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", read_only)
    result = CliRunner().invoke(app, ["parity", str(bundle), "--data", data, "--record"])
    assert result.exit_code == 2 and "cannot record the check" in result.output
    assert "Traceback" not in result.output
    assert (bundle / "manifest.json").read_text() == before
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_fp16_and_dynamic_artifacts(insects_run, tmp_path):
    out = tmp_path / "b"
    result = CliRunner().invoke(
        app, ["export", str(insects_run), "--fp16", "--dynamic", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    got = {(a["format"], a["precision"]) for a in m["artifacts"]}
    assert got == {
        ("tflite", "float32"),
        ("tflite", "float16"),
        ("tflite", "dynamic"),
        ("onnx", "float32"),
        ("onnx", "float16"),
    }
    for a in m["artifacts"]:
        assert a["parity"]["failures"] == [], a
        load_predictor(out / a["file"])


@pytest.mark.slow
@pytest.mark.int8
def test_mobilenet_v2_parity_float_and_int8(insects_data, tmp_path):
    from edgecls.train import TrainConfig, train
    from edgecls.train.models import ModelConfig

    run = tmp_path / "mnv2"
    train(
        TrainConfig(
            data=insects_data,
            out=run,
            epochs=1,
            augment=False,
            model=ModelConfig("mobilenet-v2", (96, 96), alpha=0.35, weights="none"),
        )
    )
    out = tmp_path / "b"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(run),
            "--int8",
            "--out",
            str(out),
            "--calibration-size",
            "100",
            "--max-drop",
            "100",
            "--min-agreement",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    for a in m["artifacts"]:
        if a["precision"] == "float32":
            assert a["parity"]["max_abs_prob_diff"] <= 1e-4
        else:  # figures are measured and recorded even for an untrained backbone
            assert 0 <= a["parity"]["agreement"] <= 1 and a["parity"]["n"] == 300


def test_bad_inputs_are_one_line_errors(insects_run, insects_data, tmp_path):
    runner = CliRunner()
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    fake = tmp_path / "fake" / "model.keras"
    fake.parent.mkdir()
    fake.write_bytes(b"PK\x03\x04 not really")
    (fake.parent / "labels.txt").write_text("a\nb\n")
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "readme.txt").write_text("x")
    other = tmp_path / "other"
    shutil.copytree(insects_data / "test" / "beetles", other / "moths")
    cases = [
        (["export", str(empty_run)], "no model.keras"),
        (["export", str(fake), "--eval-data", str(insects_data)], "not a Keras model"),
        (["export", str(insects_run), "--int8", "--calibration", str(no_images)], "no images"),
        (["export", str(insects_run), "--eval-data", str(other)], "moths"),
        (["export", str(insects_run), "--format", "coreml"], "coreml"),
        (["export", str(insects_run), "--int8", "--onnx-int8", "s4s4"], "--onnx-int8 s4s4"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output and "Traceback" not in result.output, result.output


def test_data_calibration_is_class_balanced(insects_data, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "data",
            "calibration",
            "--from",
            str(insects_data),
            "--out",
            str(tmp_path / "calib"),
            "--size",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    counts = {d.name: len(list(d.iterdir())) for d in (tmp_path / "calib").iterdir()}
    assert counts == dict.fromkeys(CLASSES, 10)
    assert "warning" in result.output  # 30 < 100 recommended


def test_softmax_is_split_off_every_kind_of_head_and_put_back_by_the_runtime(tmp_path):
    """Dense(softmax), a separate softmax layer, or no softmax at all (left as it is); and a
    .tflite that outputs probabilities itself is not given a second softmax."""
    import keras

    from edgecls.bundle.backends import softmax
    from edgecls.export.context import logits_model

    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)

    def tiny(head):
        inputs = keras.Input((8, 8, 3))
        features = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, head(features))

    dense = tiny(keras.layers.Dense(3, activation="softmax"))
    separate = tiny(lambda f: keras.layers.Softmax()(keras.layers.Dense(3)(f)))
    plain = tiny(keras.layers.Dense(3))
    for model in (dense, separate):
        split = logits_model(model)
        logits = np.asarray(split(x)["logits"])
        np.testing.assert_allclose(softmax(logits), np.asarray(model(x)), atol=1e-6)
    assert logits_model(plain) is plain

    import tensorflow as tf

    foreign = tmp_path / "probabilities.tflite"
    foreign.write_bytes(tf.lite.TFLiteConverter.from_keras_model(dense).convert())
    predictor = load_predictor(foreign)
    assert predictor.io["output"]["values"] == "probabilities"
    np.testing.assert_allclose(
        predictor.predict(x.astype(np.uint8)), np.asarray(dense(x.astype(np.uint8))), atol=1e-6
    )


def test_every_format_in_the_table_has_its_converters_backend_and_file_names():
    """The format table is the one list: each entry needs a converter per precision, a metadata
    writer and (with int8) a quantizer in export/, and a backend in bundle/backends.py."""
    from edgecls.bundle.backends import BACKENDS
    from edgecls.bundle.formats import FORMATS, MIXED, artifact_file, format_of
    from edgecls.export.formats import (
        ARTIFACT_FORMATS,
        METADATA_WRITERS,
        QUANTIZERS,
        load_converters,
    )

    load_converters()
    for name, f in FORMATS.items():
        assert f.backend in BACKENDS and format_of(artifact_file(name, MIXED)) == f
        assert {p for fmt, p in ARTIFACT_FORMATS if fmt == name} == set(f.precisions)
        assert name in METADATA_WRITERS and (name in QUANTIZERS) == ("int8" in f.precisions)
        for p in f.precisions:
            assert ARTIFACT_FORMATS.get((name, p)).file == artifact_file(name, p)
    assert artifact_file("onnx", MIXED) == "model_int8_mixed.onnx"
    with pytest.raises(
        EdgeclsError, match=r"unknown model format '\.pb' \(known: \.tflite, \.onnx\)"
    ):
        format_of("m.pb")


def test_a_run_config_of_the_wrong_type_is_one_line_naming_the_field(insects_run, tmp_path):
    """config.json is read through the typed loader: a hand-edited split is refused by name."""
    run = tmp_path / "run"
    shutil.copytree(insects_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["split"]["val_fraction"] = "a lot"
    (run / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 2
    assert f"{run / 'config.json'}: split.val_fraction: must be a number" in result.output
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))
