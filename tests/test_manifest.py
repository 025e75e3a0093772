"""The bundle manifest: one typed schema, validated once; every malformed or inconsistent
manifest is one `error:` line naming the bundle and the field, on every command that reads it."""

from __future__ import annotations

import copy
import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from edgecls.bundle.manifest import SCHEMA_VERSION, parse_manifest
from edgecls.cli import app
from edgecls.errors import EdgeclsError
from edgecls.schema import SchemaError

SHA = "ab" * 32


def valid() -> dict:
    figures = {
        "n": 10,
        "accuracy": 0.9,
        "reference_accuracy": 0.9,
        "accuracy_drop": 0.0,
        "agreement": 1.0,
        "mean_abs_prob_diff": 0.0,
        "max_abs_prob_diff": 0.0,
        "failures": [],
    }
    artifact = {
        "file": "model_int8.tflite",
        "format": "tflite",
        "precision": "int8",
        "bytes": 1000,
        "sha256": SHA,
        "input": {"dtype": "uint8", "scale": 1.0, "zero_point": 0},
        "output": {"dtype": "uint8", "scale": 0.1, "zero_point": 3, "values": "logits"},
        "parity": figures,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "edgecls_version": "0.2.0",
        "name": "b",
        "created": "2026-11-25T00:00:00+00:00",
        "source_model": {"file": "runs/x/model.keras", "sha256": SHA},
        "labels": ["a", "b"],
        "input": {"height": 64, "width": 64, "preprocessing": "rgb8-stretch-area-linear-exact/2"},
        "parity": {
            "reference": "float Keras model",
            "data": "d",
            "n": 10,
            "reference_accuracy": 0.9,
            "thresholds": {"max_drop": 1.0, "min_agreement": 0.97, "float_tolerance": 1e-4},
            "checked_on": ["x86_64"],
        },
        "artifacts": [artifact],
    }


def _set(path: str, value):
    def change(m):
        *keys, last = path.split(".")
        target = m
        for k in keys:
            target = target[int(k)] if k.isdigit() else target[k]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
        return m

    return change


_DELETE = object()

# (case, change to a valid manifest (dict -> JSON-able), the field the error must name, words)
MALFORMED = [
    ("a JSON list", lambda m: [m], "top level", "JSON object"),
    ("artifacts null", _set("artifacts", None), "artifacts", "null"),
    ("no artifacts", _set("artifacts", []), "", "no artifact"),
    ("artifact without parity", _set("artifacts.0.parity", _DELETE), "artifacts[0].parity", ""),
    ("artifact without sha256", _set("artifacts.0.sha256", _DELETE), "artifacts[0].sha256", ""),
    ("sha256 not hex", _set("artifacts.0.sha256", "xyz"), "artifacts[0]", "64 hex"),
    ("file climbs out", _set("artifacts.0.file", "../other/m.tflite"), "artifacts[0]", "plain"),
    ("absolute file", _set("artifacts.0.file", "/etc/passwd"), "artifacts[0]", "plain"),
    ("labels not a list", _set("labels", "a,b"), "labels", "list"),
    ("one label", _set("labels", ["a"]), "", "two distinct"),
    ("repeated label", _set("labels", ["a", "a"]), "", "two distinct"),
    ("height a string", _set("input.height", "64"), "input.height", "number"),
    ("BGR input", _set("input.color", "BGR"), "input", "RGB"),
    (
        "unknown preprocessing",
        _set("input.preprocessing", "rgb8-letterbox/9"),
        "input",
        "upgrade edgecls",
    ),
    ("old schema", _set("schema_version", 1), "schema_version", "re-export"),
    ("newer schema", _set("schema_version", 99), "schema_version", "upgrade edgecls"),
    ("unknown key", _set("colour_order", "RGB"), "colour_order", "unknown key"),
    ("max_drop negative", _set("parity.thresholds.max_drop", -1), "parity.thresholds", "0-100"),
    ("parity figures a list", _set("artifacts.0.parity", [1]), "artifacts[0].parity", "object"),
    ("unknown format", _set("artifacts.0.format", "pb"), "artifacts[0].format", "not one of"),
    ("repair without plain", _set("artifacts.0.repair", {"summary": "x"}), "", "repair.plain"),
    ("repair of a stranger", _set("artifacts.0.repair", {"plain": "m.onnx"}), "", "names no"),
]


def test_a_valid_manifest_round_trips():
    m = parse_manifest(json.dumps(valid()), "b/manifest.json")
    assert m.artifacts[0].passed and m.input.size == (64, 64)
    again = parse_manifest(m.to_json(), "b/manifest.json")
    assert again == m
    assert "passed" not in json.loads(m.to_json())["artifacts"][0]["parity"]  # derived


@pytest.mark.parametrize("case,change,field,words", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_each_malformed_manifest_is_one_error_naming_the_field(case, change, field, words):
    text = json.dumps(change(copy.deepcopy(valid())))
    with pytest.raises(SchemaError) as info:
        parse_manifest(text, "b/manifest.json")
    message = str(info.value)
    assert message.startswith("b/manifest.json: ") and field in message and words in message
    assert "\n" not in message


def test_not_json_is_one_error():
    with pytest.raises(EdgeclsError, match="not valid JSON"):
        parse_manifest("{", "b/manifest.json")


# ---------------------------------------------------------------------------------------------
# on real bundles, through every command that reads one


def _rewrite(bundle, change):
    m = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps(change(m)))


def _reorder_labels(m):
    m["labels"] = m["labels"][::-1]
    return m


def _other_size(m):
    m["input"]["height"] = m["input"]["width"] = 96
    return m


BUNDLE_CASES = [
    *[(case, change, field or words) for case, change, field, words in MALFORMED[:8]],
    ("unknown preprocessing", MALFORMED[13][1], "preprocessing"),
    ("labels reordered", _reorder_labels, "differ from the manifest"),
    ("input size differs", _other_size, "differs from the manifest"),
]


def _commands(bundle, data, video):
    return {
        "run": ["run", str(bundle), "--source", str(video), "--headless", "--max-frames", "1"],
        "parity": ["parity", str(bundle), "--data", str(data)],
        "benchmark": ["benchmark", str(bundle), "--runs", "1"],
    }


@pytest.fixture(scope="module")
def video(insects_data, tmp_path_factory):
    from videos import write_video

    path = tmp_path_factory.mktemp("video") / "v.mp4"
    write_video(path, sorted((insects_data / "test").rglob("*.jpg"))[:3], repeat=1, size=(64, 64))
    return path


@pytest.mark.parametrize("case,change,words", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_bad_manifests_stop_run_parity_and_benchmark_before_the_first_frame(
    case, change, words, int8_bundle, insects_data, video, tmp_path
):
    bundle = shutil.copytree(int8_bundle, tmp_path / "b")
    _rewrite(bundle, change)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    for name, args in _commands(bundle, insects_data / "test", video).items():
        result = CliRunner().invoke(app, args)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2, (name, result.output)
        assert len(errors) == 1 and words in errors[0], (name, result.output)
        assert "Traceback" not in result.output and '"label"' not in result.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # nothing touched


def test_an_artifact_outside_the_bundle_is_refused_even_with_its_sha256(
    int8_bundle, video, tmp_path
):
    bundle = shutil.copytree(int8_bundle, tmp_path / "b")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(bundle / "model_int8.tflite", elsewhere / "model_int8.tflite")
    os.symlink(elsewhere / "model_int8.tflite", bundle / "model_int8.tflite")  # same bytes
    args = ["run", str(bundle), "--source", str(video), "--headless", "--artifact"]
    result = CliRunner().invoke(app, [*args, "model_int8.tflite"])
    assert result.exit_code == 2 and "points outside the bundle folder" in result.output
    result = CliRunner().invoke(app, [*args, str(elsewhere / "model_int8.tflite")])
    assert result.exit_code == 2 and "not in the bundle" in result.output


def test_artifacts_carry_their_labels_and_input_spec(int8_bundle):
    from edgecls.bundle.folder import load_bundle

    bundle = load_bundle(int8_bundle)
    for artifact in bundle.artifacts:
        meta = bundle.load(artifact, allow_failed=True).metadata
        assert meta["labels"] == bundle.labels
        assert meta["input"]["preprocessing"] == bundle.input_spec.preprocessing
        assert (meta["input"]["height"], meta["input"]["width"]) == bundle.input_spec.size
