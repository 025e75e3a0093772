"""`edgecls explain BUNDLE`: an artifact explained through the board's predictor without
TensorFlow, and `--compare` against the float model where they disagree."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.explain.compare import disagreements, map_distance

NO_TENSORFLOW = """
import importlib.abc, os, sys
BLOCKED = {"tensorflow", "keras", "tf2onnx", "tf_keras", *os.environ.get("MISSING", "").split()}
tried = []

class DeviceOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, DeviceOnly())
from edgecls.cli import app
code = app(sys.argv[1:], prog_name="edgecls", standalone_mode=False)
print("TRIED:" + ",".join(sorted(set(tried))))
sys.exit(code)
"""


def _images(insects_data, per_class: str = "000[0-4]") -> list[str]:
    return [
        a
        for c in ("beetles", "cockroach", "dragonflies")
        for a in ("--images", str(insects_data / "test" / c / f"{c}_{per_class}.jpg"))
    ]


def test_an_int8_tflite_artifact_is_explained_without_tensorflow(
    int8_bundle, insects_data, tmp_path
):
    out = tmp_path / "report"
    args = ["explain", str(int8_bundle), "--artifact", "model_int8.tflite", "--out", str(out)]
    args += ["--max-evals", "100", "--segments", "25", *_images(insects_data, "000[0-1]")]
    proc = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TRIED:\n" in proc.stdout, proc.stdout  # nothing even tried to import TensorFlow
    report = json.loads((out / "explain.json").read_text())
    s = report["summary"]
    assert s["method"] == "kernel" and s["model"].endswith("model_int8.tflite") and s["n"] == 6
    assert "passed its parity gate" in s["parity"] and s["background"] is None
    assert s["deletion"]["mean_top_drop"] > s["deletion"]["mean_random_drop"], s["deletion"]
    assert (out / "report.html").is_file() and len(list(out.glob("*.png"))) == 6


def test_a_board_without_the_explain_extra_is_told_what_to_install(
    int8_bundle, insects_data, tmp_path
):
    args = ["explain", str(int8_bundle), "--out", str(tmp_path / "r"), *_images(insects_data)]
    proc = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MISSING": "shap skimage"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: explain needs shap, scikit-image, not installed here: pip install "
        "'edgecls[explain]' (a board without TensorFlow included)"
    ]
    assert not (tmp_path / "r").exists()


def _shifted_copy(bundle, dest, shift):
    """The bundle with its int8 ONNX artifact's logits shifted by `shift`: an artifact that
    disagrees with the float model wherever two classes are close (its manifest updated, so it
    loads as the bundle's own)."""
    import onnx
    from onnx import helper, numpy_helper

    shutil.copytree(bundle, dest)
    path = dest / "model_int8.onnx"
    model = onnx.load(str(path))
    last = next(n for n in model.graph.node if "logits" in n.output)
    last.output[0] = "logits_unshifted"
    model.graph.initializer.append(numpy_helper.from_array(np.float32(shift), "logits_shift"))
    model.graph.node.append(
        helper.make_node("Add", ["logits_unshifted", "logits_shift"], ["logits"])
    )
    onnx.save(model, str(path))
    manifest = json.loads((dest / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.onnx")
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _probabilities(bundle, file, paths):
    from edgecls.bundle.folder import load_bundle

    b = load_bundle(bundle)
    return b.load(b.artifact(file), allow_failed=True).predict(b.input_spec.load_batch(paths))


def test_compare_shows_where_an_artifact_disagrees_with_both_attributions(
    int8_bundle, insects_data, tmp_path
):
    bundle = _shifted_copy(int8_bundle, tmp_path / "b", [1.5, 0.0, 0.0])
    paths = sorted((insects_data / "test").glob("*/*_00[01]?.jpg"))  # 20 per class
    ref = _probabilities(bundle, "model_float32.tflite", paths)
    art = _probabilities(bundle, "model_int8.onnx", paths)
    differ = np.flatnonzero(ref.argmax(1) != art.argmax(1))
    assert len(differ) > 3, "the shifted artifact must disagree on more than --compare-images"
    most_apart = differ[np.argsort(-np.abs(ref - art).max(1)[differ])][:3]
    out = tmp_path / "compare"
    args = ["explain", str(bundle), "--artifact", "model_int8.onnx", "--compare"]
    args += ["--compare-images", "3", "--max-evals", "100", "--segments", "25"]
    args += ["--out", str(out), "--images", str(insects_data / "test" / "*" / "*_00[01]?.jpg")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"against the float model on 60 images: disagree on {len(differ)}" in result.output
    report = json.loads((out / "explain.json").read_text())
    c = report["summary"]["compare"]
    assert c["disagree"] == len(differ) and c["shown"] == len(most_apart) == 3
    assert c["reference"].endswith("model_float32.tflite") and c["layers"]  # the error table
    assert {r["image"] for r in report["images"]} == {str(paths[i]) for i in most_apart}
    for row in report["images"]:
        assert row["predicted"] != row["compare"]["reference_predicted"]
        assert [d["label"] for d in row["compare"]["distance"]] == [
            row["predicted"],
            row["compare"]["reference_predicted"],
        ]
        for d in row["compare"]["distance"]:
            assert -1 <= d["rank_correlation"] <= 1 and 0 <= d["top_overlap"] <= 1
    for row in report["images"]:  # both models' maps for both classes: input, 4 maps, bars
        width = cv2.imread(str(out / row["figure"])).shape[1]
        assert width > 1500, width  # a one-model figure of two classes is about 1200 px
    page = (out / "report.html").read_text()
    assert page.count("<img") == page.count("class='compare'") == 3
    assert "per-layer error table names" in page and c["layers"][0]["tensor"] in page


def test_compare_on_a_healthy_artifact_says_there_is_none_to_show(
    int8_bundle, insects_data, tmp_path
):
    out = tmp_path / "compare"
    args = ["explain", str(int8_bundle), "--artifact", "model_float32.onnx", "--compare"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *_images(insects_data)])
    assert result.exit_code == 0, result.output
    assert "disagree on none: no image to show" in result.output
    report = json.loads((out / "explain.json").read_text())
    assert report["images"] == [] and report["summary"]["compare"]["disagree"] == 0
    page = (out / "report.html").read_text()
    assert "id='none-to-show'" in page and "<img" not in page
    assert "No per-layer error table for this artifact" in page  # a float32 one has none


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "gradient"], "--method gradient needs the float Keras model"),
        (["--artifact", "model_int9.tflite"], "no artifact 'model_int9.tflite'"),
        (["--max-evals", "40"], "--max-evals 40 is too few for --segments 50"),
        (["--segments", "1"], "--segments must be at least 2"),
    ],
)
def test_bundle_explain_bad_settings_are_one_line(
    args, message, int8_bundle, insects_data, tmp_path
):
    out = tmp_path / "never"
    result = CliRunner().invoke(
        app, ["explain", str(int8_bundle), *args, "--out", str(out), *_images(insects_data)]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_compare_and_artifact_need_a_bundle(insects_run, insects_data):
    result = CliRunner().invoke(
        app, ["explain", str(insects_run), "--compare", *_images(insects_data)]
    )
    assert result.exit_code == 2 and "take a bundle folder" in result.output


def test_disagreements_are_the_differing_images_most_apart_first():
    ref = np.array([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8], [0.7, 0.3]])
    art = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.25, 0.75], [0.52, 0.48]])
    picks, figures = disagreements(ref, art, limit=5)
    assert list(picks) == [1, 2]  # 4 moves most among those that agree: not shown
    assert figures["disagree"] == 2 and figures["agreement"] == pytest.approx(0.6)
    assert figures["max_abs_prob_diff"] == pytest.approx(0.2)
    assert list(disagreements(ref, art, limit=1)[0]) == [1]


def test_map_distance_tells_the_same_region_from_another():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 20))
    same = map_distance(a, 0.3 * a)  # the same region, less sharply
    assert same["rank_correlation"] == pytest.approx(1.0) and same["top_overlap"] == 1.0
    other = map_distance(a, -a)
    assert other["rank_correlation"] == pytest.approx(-1.0) and other["top_overlap"] == 0.0
    assert map_distance(a, np.zeros_like(a))["rank_correlation"] is None
