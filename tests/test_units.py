"""Fast tests of the pure pieces: resize and the preprocessing identifiers, the parity figures,
the stratified split, the typed loader, image headers. No model, no TensorFlow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pytest

from edgecls.bundle.image_size import image_size
from edgecls.bundle.manifest import ParityThresholds
from edgecls.bundle.parity import compare
from edgecls.bundle.preprocess import (
    CURRENT,
    PREPROCESSING,
    InputSpec,
    frame_to_input,
    preprocessing_from_legacy,
    resize,
)
from edgecls.errors import EdgeclsError
from edgecls.folders import _stratified
from edgecls.schema import SchemaError, from_dict, to_dict

RNG = np.random.default_rng(0)


def _image(h, w, c=3, dtype=np.uint8):
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w, c) if c else (h, w)
    return RNG.integers(0, hi, shape).astype(dtype)


# -- resize and the preprocessing contract ---------------------------------------------------


@pytest.mark.parametrize("shape", [(480, 640), (97, 61), (64, 64), (2000, 100)])
def test_resize_gives_the_model_size_and_keeps_uint8(shape):
    out = resize(_image(*shape), (64, 48))
    assert out.shape == (64, 48, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_resize_of_the_right_size_is_the_image_itself():
    img = _image(64, 64)
    assert np.array_equal(resize(img, (64, 64)), img)


def test_large_downscales_average_first_so_a_fine_pattern_does_not_alias():
    stripes = np.zeros((640, 640, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: a plain bilinear resize picks a few of them
    out = resize(stripes, (64, 64)).astype(float)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 2


def test_each_preprocessing_identifier_is_its_own_input_path():
    img = _image(480, 640)
    v1, v2 = "rgb8-stretch-area-linear/1", "rgb8-stretch-area-linear-exact/2"
    assert {v1, v2} <= set(PREPROCESSING.names) and v2 == CURRENT
    a, b = resize(img, (96, 96), v1), resize(img, (96, 96), v2)
    assert a.shape == b.shape and not np.array_equal(a, b)  # same shape, other pixels
    with pytest.raises(EdgeclsError, match="preprocessing 'letterbox/1' is not known"):
        resize(img, (96, 96), "letterbox/1")


def test_legacy_descriptions_map_to_their_identifiers():
    v1 = "stretch: cv2.INTER_AREA by the largest integer factor, then cv2.INTER_LINEAR"
    assert preprocessing_from_legacy(v1) == "rgb8-stretch-area-linear/1"
    assert preprocessing_from_legacy(v1 + "_EXACT") == CURRENT
    with pytest.raises(EdgeclsError, match="retrain"):
        preprocessing_from_legacy("letterbox")


def test_input_spec_refuses_what_the_device_cannot_feed():
    with pytest.raises(ValueError, match="not known"):
        InputSpec(64, 64, preprocessing="x/9")
    with pytest.raises(ValueError, match="RGB"):
        InputSpec(64, 64, color="BGR")
    with pytest.raises(ValueError, match="positive"):
        InputSpec(0, 64)


@pytest.mark.parametrize("frame", [_image(120, 160, 0), _image(120, 160, 1), _image(120, 160, 4)])
def test_grey_and_alpha_frames_become_rgb_model_input(frame):
    out = frame_to_input(frame, (32, 32))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_bgr_frames_are_swapped_to_rgb():
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[..., 0] = 255  # blue in OpenCV's order
    assert tuple(frame_to_input(frame, (8, 8))[0, 0]) == (0, 0, 255)


# -- parity figures ---------------------------------------------------------------------------


def _probs(labels, n=3, sure=0.9):
    p = np.full((len(labels), n), (1 - sure) / (n - 1), np.float32)
    p[np.arange(len(labels)), labels] = sure
    return p


def test_compare_float32_is_a_conversion_check():
    ref = _probs([0, 1, 2, 0])
    t = ParityThresholds()
    assert compare(ref, ref + 1e-6, np.array([0, 1, 2, 0]), "float32", t).passed
    off = compare(ref, ref + 1e-3, np.array([0, 1, 2, 0]), "float32", t)
    assert not off.passed and "float32 must match" in off.failures[0]


def test_compare_quantized_gates_on_drop_and_agreement():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    ref = _probs(y)
    worse = _probs([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])  # one image of ten now wrong
    f = compare(ref, worse, y, "int8", ParityThresholds())
    assert f.accuracy_drop == pytest.approx(10.0) and f.agreement == pytest.approx(0.9)
    assert len(f.failures) == 2 and not f.passed
    lenient = ParityThresholds(max_drop=10.0, min_agreement=0.9)
    assert compare(ref, worse, y, "int8", lenient).passed
    better = compare(worse, ref, y, "int8", lenient)
    assert better.accuracy_drop == pytest.approx(-10.0)  # negative: better than the reference


def test_compare_refuses_outputs_of_another_shape():
    with pytest.raises(ValueError, match="output shape"):
        compare(_probs([0, 1]), _probs([0, 1], n=4), np.array([0, 1]), "int8", ParityThresholds())


def test_thresholds_out_of_range_are_refused():
    for kwargs in ({"max_drop": -1}, {"min_agreement": 1.5}, {"float_tolerance": 2}):
        with pytest.raises(ValueError):
            ParityThresholds(**kwargs)


# -- the stratified split ---------------------------------------------------------------------


def test_stratified_split_is_disjoint_balanced_and_seeded():
    usable = {c: [Path(f"{c}/{i:03d}.jpg") for i in range(n)] for c, n in (("a", 100), ("b", 40))}
    fractions = {"val": 0.15, "test": 0.15}
    splits = _stratified(usable, ["a", "b"], fractions, seed=7)
    every = [p for s in splits.values() for p in s.paths]
    assert len(every) == len(set(every)) == 140
    for name, frac in fractions.items():
        assert splits[name].counts(["a", "b"]) == {"a": round(100 * frac), "b": round(40 * frac)}
    assert splits == _stratified(usable, ["a", "b"], fractions, seed=7)
    assert splits != _stratified(usable, ["a", "b"], fractions, seed=8)
    assert splits["test"].labels == sorted(splits["test"].labels)  # fixed order: class, path


def test_tiny_classes_stay_in_training():
    usable = {"a": [Path("a/1.jpg"), Path("a/2.jpg")], "b": [Path(f"b/{i}") for i in range(10)]}
    splits = _stratified(usable, ["a", "b"], {"val": 0.2, "test": 0.2}, seed=0)
    assert splits["train"].counts(["a", "b"])["a"] == 2


# -- the typed loader -------------------------------------------------------------------------


@dataclass(frozen=True)
class Inner:
    size: tuple[int, int]
    mode: Literal["fast", "exact"] = "fast"


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    tags: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    path: Path | None = None


def test_from_dict_builds_nested_dataclasses_and_round_trips():
    o = from_dict(Outer, {"name": "x", "inner": {"size": [2, 3]}, "path": "a/b"}, "f")
    assert o.inner.size == (2, 3) and o.path == Path("a/b") and o.tags == ()
    assert from_dict(Outer, to_dict(o), "f") == o


@pytest.mark.parametrize(
    "data,field_,words",
    [
        ({"inner": {"size": [2, 3]}}, "name", "missing"),
        ({"name": "x", "inner": {"size": [2]}}, "inner.size", "2 items"),
        ({"name": "x", "inner": {"size": [2, 3], "mode": "slow"}}, "inner.mode", "'fast'"),
        ({"name": "x", "inner": {"size": [2, 3]}, "colour": 1}, "colour", "unknown key"),
        ({"name": 5, "inner": {"size": [2, 3]}}, "name", "must be a string"),
        ({"name": "x", "inner": {"size": [True, 3]}}, "inner.size[0]", "number"),
    ],
)
def test_from_dict_names_the_field(data, field_, words):
    with pytest.raises(SchemaError) as info:
        from_dict(Outer, data, "cfg.yaml")
    assert str(info.value).startswith(f"cfg.yaml: {field_}: ") and words in str(info.value)


# -- image headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_image_size_from_the_header(ext):
    ok, buf = cv2.imencode(ext, _image(37, 81))
    assert ok and image_size(buf.tobytes()) == (81, 37)


def test_image_size_of_something_else_is_none():
    assert image_size(b"GIF89a....") is None and image_size(b"\xff\xd8\xff") is None


def test_an_image_whose_size_the_header_does_not_tell_is_not_decoded(tmp_path):
    """A TIFF named .png: OpenCV would decode it, at whatever size, past the 64 MP guard."""
    from edgecls.bundle.preprocess import decode_image, read_image

    ok, tiff = cv2.imencode(".tiff", _image(37, 81))
    assert ok and decode_image(tiff.tobytes()) is None
    fake = tmp_path / "scan.png"
    fake.write_bytes(tiff.tobytes())
    with pytest.raises(EdgeclsError, match=r"scan\.png: not a readable image"):
        read_image(fake)
    ok, png = cv2.imencode(".png", _image(37, 81))
    assert decode_image(png.tobytes()).shape == (37, 81, 3)  # the formats it knows still decode


def test_a_folder_named_with_digits_is_that_folder_not_a_camera(tmp_path, monkeypatch):
    from edgecls.runtime.sources import open_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").mkdir()
    cv2.imwrite(str(tmp_path / "2024" / "trap.png"), _image(37, 81))
    source = open_source("2024")
    try:
        frame = source.read()
        assert not source.live and frame.name == "trap.png" and frame.image.shape == (37, 81, 3)
    finally:
        source.close()


def test_evaluation_metrics_match_scikit_learn_without_it_on_the_board():
    """evaluate's numpy metrics against scikit-learn's (a dev dependency only), with a class
    never predicted and one absent from the data."""
    from sklearn.metrics import classification_report, confusion_matrix

    from edgecls.evaluate import Evaluation, metrics

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 300)  # class 3 never occurs
    probs = rng.random((300, 5))
    probs[:, 4] = 0  # class 4 is never predicted
    ev = Evaluation([f"c{i}" for i in range(5)], [Path("x")] * 300, y_true, probs)
    m = metrics(ev)
    ids = list(range(5))
    ref = classification_report(
        ev.y_true, ev.y_pred, labels=ids, target_names=ev.classes, output_dict=True,
        zero_division=0,
    )  # fmt: skip
    for name in ev.classes:
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert m["per_class"][name][ours] == pytest.approx(ref[name][theirs], abs=1e-12)
        assert m["per_class"][name]["support"] == ref[name]["support"]
    for key, avg in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        assert m[key]["f1"] == pytest.approx(ref[avg]["f1-score"], abs=1e-12)
    assert m["confusion_matrix"] == confusion_matrix(ev.y_true, ev.y_pred, labels=ids).tolist()


def test_the_loop_probe_measures_the_model_with_the_frame_work_and_never_hangs_on_a_fault():
    from edgecls.runtime.loop_probe import loop_fps, probe_frame

    class Model:  # 5 ms a frame, whatever the input
        def predict(self, batch):
            assert batch.shape == (1, 8, 8, 3)
            time.sleep(0.005)
            return np.ones((1, 2), np.float32) / 2

    jpeg = probe_frame((64, 48))
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    for overlap in (True, False):
        fps = loop_fps(Model(), lambda image: image[:8, :8], jpeg, 0.2, overlap)
        assert 20 < fps <= 1000 / 5 * 1.05, fps  # never faster than the model alone
    with pytest.raises(ZeroDivisionError):
        loop_fps(Model(), lambda image: 1 / 0, jpeg, 0.2)
