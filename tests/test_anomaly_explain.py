"""`edgecls explain` on an anomaly run or bundle: the model's own anomaly maps, scored by the
pointing game against the casting sample's defect masks and by a deletion check on the score,
never SHAP; SHAP's options are refused with a line naming them."""

import json
import subprocess
import sys

import numpy as np
from test_explain_bundle import NO_TENSORFLOW
from typer.testing import CliRunner

from edgecls.bundle.anomaly import margins
from edgecls.cli import app
from edgecls.runs import resolve_source

# Measured on 2 cores (anomaly_run at 64 px, seed 0): the pointing game hits 30 of the 30 defect
# images for the float model and for the int8 artifact; a looser bound leaves room for another
# CPU's float training, which moves the maps a little
MIN_POINTING = 0.6


def _images(casting_data) -> list[str]:
    """The 30 test defects (with masks) and 10 good test images (without)."""
    test = casting_data / "test"
    return ["--images", str(test / "def"), "--images", str(test / "ok" / "ok_000[0-9].jpg")]


def _check_report(out, model_name: str) -> dict:
    report = json.loads((out / "explain.json").read_text())
    s = report["summary"]
    assert s["task"] == "anomaly" and s["method"] == "anomaly map" and s["n"] == 40, s
    assert s["model"].endswith(model_name)
    assert s["pointing_game"]["n"] == 30  # the defects have masks, the good images none
    assert s["pointing_game"]["hit_rate"] >= MIN_POINTING, s["pointing_game"]
    # blurring the most anomalous 10% lowers the score far more than a random 10% (measured:
    # +1.96 against -0.14 for the float model)
    d = s["deletion"]
    assert d["mean_top_drop"] > d["mean_random_drop"] + 0.5, d
    assert sum(s["verdicts"].values()) == 40 and s["unlabelled"] == 0
    page = (out / "report.html").read_text()
    assert "Anomaly map report" in page and "SHAP report" not in page
    assert len(list(out.glob("*.png"))) == 40
    for row in report["images"]:
        assert (out / row["figure"]).is_file()
        assert f"{row['score']:.3f}</span>" in page
        assert (row["score"] >= s["threshold"]) == (row["predicted"] == "anomaly"), row
        hit = row["pointing_hit"]
        assert (hit is None) == ("/ok/" in row["image"]) and row["deletion"]["top_drop"] is not None
    return report


def test_an_anomaly_run_is_explained_by_its_own_maps(anomaly_run, casting_data, tmp_path):
    from edgecls.keras_predictor import KerasPredictor

    out = tmp_path / "report"
    args = ["explain", str(anomaly_run), "--out", str(out), *_images(casting_data)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pointing game: " in result.output and "anomaly maps: " in result.output
    report = _check_report(out, "model.keras")
    source = resolve_source(anomaly_run)
    model = KerasPredictor(source.model_path)
    spec = source.input_spec(model.input_size)
    rows = report["images"]
    x = np.stack([spec.load_image(r["image"]) for r in rows]).astype(np.float32)
    scores = margins(model.outputs(x)) + source.config.threshold
    verdicts = [source.labels[i] for i in model.predict(x).argmax(axis=1)]
    np.testing.assert_allclose([r["score"] for r in rows], scores, atol=1e-4)
    assert [r["predicted"] for r in rows] == verdicts


def test_an_anomaly_bundle_is_explained_with_its_int8_artifact_without_tensorflow(
    anomaly_bundle, casting_data, tmp_path
):
    from edgecls.bundle.folder import load_bundle

    out = tmp_path / "report"
    args = ["explain", str(anomaly_bundle), "--out", str(out), *_images(casting_data)]
    proc = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TRIED:\n" in proc.stdout, proc.stdout  # nothing even tried to import TensorFlow
    report = _check_report(out, "model_int8.tflite")
    assert "passed its parity gate" in report["summary"]["parity"]
    bundle = load_bundle(anomaly_bundle)
    predictor = bundle.load(bundle.artifact("model_int8.tflite"))
    rows = report["images"]
    x = np.stack([bundle.input_spec.load_image(r["image"]) for r in rows])
    probs = predictor.predict(x)
    assert [r["predicted"] for r in rows] == [bundle.labels[i] for i in probs.argmax(axis=1)]
    scores = margins(predictor.outputs(x)) + bundle.manifest.anomaly.threshold
    np.testing.assert_allclose([r["score"] for r in rows], scores, atol=1e-4)


def test_shap_options_are_refused_for_an_anomaly_model(anomaly_run, casting_data, tmp_path):
    out = tmp_path / "report"
    args = ["explain", str(anomaly_run), "--out", str(out), *_images(casting_data)]
    result = CliRunner().invoke(app, [*args, "--top-k", "3"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --top-k: not for an anomaly model, which its own anomaly map explains (no SHAP, "
        "no classes to rank); drop it"
    ]
    result = CliRunner().invoke(app, [*args, "--method", "kernel", "--compare"])
    assert result.exit_code == 2 and "--method, --compare: not for an anomaly" in result.output
    assert not out.exists() and not list(tmp_path.iterdir())
