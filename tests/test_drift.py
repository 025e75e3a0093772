"""Drift on the device: reference statistics of the training distribution, and a rolling monitor
that stays quiet on frames like them and warns on darkened, blurred or colour-shifted frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgecls.bundle.drift import FEATURES, image_features, psi, reference_stats
from edgecls.bundle.preprocess import frame_to_input
from edgecls.runtime.drift import DriftMonitor

SIZE = (64, 64)


@pytest.fixture(scope="module")
def model_and_frames(insects_run, insects_data):
    """The trained model, the reference (training images) and held-out test frames (BGR, as a
    camera would deliver them)."""
    from edgecls.keras_predictor import KerasPredictor

    predictor = KerasPredictor(insects_run / "model.keras")
    labels = (insects_run / "labels.txt").read_text().split()
    train = sorted((insects_data / "train").rglob("*.jpg"))
    test = sorted((insects_data / "test").rglob("*.jpg"))
    reference_inputs = np.stack([frame_to_input(cv2.imread(str(p)), SIZE) for p in train])
    probs = predictor.predict(reference_inputs)
    reference = reference_stats(reference_inputs, probs, labels)
    return predictor, reference, [cv2.imread(str(p)) for p in test]


def monitor_score(predictor, reference, frames, change=lambda f: f) -> dict:
    """240 frames (test images, shuffled, changed by `change`) through a fresh monitor."""
    rng = np.random.default_rng(0)
    order = rng.permutation(np.resize(np.arange(len(frames)), 240))
    monitor = DriftMonitor(reference, window=200, threshold=1.0)
    state = {}
    for i in order:
        x = frame_to_input(change(frames[i]), SIZE)
        probs = predictor.predict(x[None])[0]
        state = monitor.update(x, float(probs.max()))
    return state


def darken(frame):
    return (frame.astype(np.float32) * 0.45).astype(np.uint8)


def blur(frame):
    return cv2.GaussianBlur(frame, (0, 0), 3.0)


def colour_cast(frame):
    shifted = frame.astype(np.int16) + np.array([-45, 0, 45], dtype=np.int16)  # BGR: warmer
    return np.clip(shifted, 0, 255).astype(np.uint8)


def test_reference_stats_are_json_ready_and_complete(model_and_frames):
    _, reference, _ = model_and_frames
    again = json.loads(json.dumps(reference))
    assert again == reference
    assert len(reference["channel_mean"]) == 3 and len(reference["channel_std"]) == 3
    assert len(reference["feature_mean"]) == len(FEATURES)
    assert sum(reference["confidence_hist"]) == reference["images"]
    assert set(reference["class_mix"]) == {"beetles", "cockroach", "dragonflies"}
    assert sum(reference["class_mix"].values()) == pytest.approx(1.0, abs=1e-3)


def test_frames_like_the_training_set_stay_below_the_threshold(model_and_frames):
    predictor, reference, frames = model_and_frames
    state = monitor_score(predictor, reference, frames)
    assert state["state"] == "ok", state
    assert state["score"] < 1.0


@pytest.mark.parametrize("change", [darken, blur, colour_cast], ids=["dark", "blur", "colour"])
def test_changed_frames_cross_the_threshold(model_and_frames, change):
    predictor, reference, frames = model_and_frames
    normal = monitor_score(predictor, reference, frames)
    state = monitor_score(predictor, reference, frames, change)
    assert state["state"] == "drift", state
    assert state["score"] >= 1.0 > normal["score"]


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift():
    ref = np.array([0, 0, 0, 0, 0, 5, 10, 20, 30, 35])
    assert psi(ref, ref * 3) == pytest.approx(0.0, abs=1e-9)
    unsure = np.array([0, 0, 10, 20, 30, 20, 10, 5, 3, 2])
    assert psi(ref, unsure) > 0.25


def test_a_darker_scene_is_caught_even_with_a_reference_of_many_kinds_of_parts():
    """Per-image figures spread widely across kinds of parts, so a 2.5x darker scene is less
    than 3 spreads away in every feature: the brightness ratio still sees it."""
    bright = np.zeros((16, 16, 3), np.uint8)
    bright[::2], bright[1::2] = 175, 25
    reference = {
        "feature_mean": image_features(bright).tolist(),
        "feature_std": [60.0, 60.0, 60.0, 30.0, 30.0, 30.0, 2.0],  # heterogeneous parts
        "confidence_hist": [0] * 9 + [100],
    }
    monitor = DriftMonitor(reference, window=50)
    state = {}
    for _ in range(50):
        state = monitor.update((bright * 0.4).astype(np.uint8), 0.99)
    assert state["input_shift"] < 3 and state["brightness_ratio"] == pytest.approx(2.5, rel=0.02)
    assert state["state"] == "drift"


def test_monitor_warms_up_before_it_scores_and_refuses_a_malformed_reference():
    from edgecls.errors import EdgeclsError

    reference = {
        "feature_mean": [100.0] * len(FEATURES),
        "feature_std": [10.0] * len(FEATURES),
        "confidence_hist": [0] * 9 + [100],
    }
    m = DriftMonitor(reference, window=200)
    state = m.update(np.full((8, 8, 3), 100, np.uint8), 0.99)
    assert state["state"] == "warming up" and state["score"] == 0.0
    with pytest.raises(EdgeclsError, match="drift_reference"):
        DriftMonitor({"feature_mean": [1.0]}, window=200)
