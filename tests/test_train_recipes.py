"""Training that learns every time: scratch backbones, transfer from a saved backbone, the
recipe registry, determinism, bounded caching, and run folders that are whole or untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.train.models import MODELS, ModelConfig, build_model, recipe_for


def _train(data: Path, out: Path, *options: str):
    return CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), *options])


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_scratch_backbone_trains_every_layer_and_pretrained_one_is_frozen(tmp_path):
    import keras

    scratch = build_model(ModelConfig("mobilenet-v2", (64, 64), alpha=0.35, weights="none"), 2)
    backbone = scratch.get_layer("backbone")
    assert backbone.trainable and all(layer.trainable for layer in backbone.layers)
    bns = [la for la in backbone.layers if isinstance(la, keras.layers.BatchNormalization)]
    before = [np.array(bn.moving_mean) for bn in bns[:3]]
    scratch(np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)), training=True)
    assert any(  # BatchNorm in training mode: its statistics move
        not np.allclose(b, np.array(bn.moving_mean)) for b, bn in zip(before, bns, strict=False)
    )
    path = tmp_path / "b.weights.h5"
    backbone.save_weights(path)
    frozen = build_model(ModelConfig("mobilenet-v2", (64, 64), alpha=0.35, weights=str(path)), 2)
    assert not frozen.get_layer("backbone").trainable
    for a, b in zip(frozen.get_layer("backbone").weights, backbone.weights, strict=True):
        assert np.array_equal(np.array(a), np.array(b))  # the file's weights, loaded


def test_every_model_has_a_recipe_and_the_cli_lists_them():
    result = CliRunner().invoke(app, ["train", "--help"])
    for name in MODELS:
        assert name in result.output
        for weights in ("none", "imagenet"):
            recipe = recipe_for(ModelConfig(name, weights=weights))
            assert recipe.epochs >= 1 and recipe.lr > 0 and recipe.patience >= 1


LEARN = {  # short runs that still learn: (img size, extra options)
    "seed-cnn": ("64", "--epochs", "6"),
    "mobilenet-v2": ("96", "--epochs", "8", "--alpha", "0.35", "--batch-size", "16"),
    "mobilenet-v3-small": ("96", "--epochs", "8", "--alpha", "0.75", "--batch-size", "16"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_learns_the_insects_from_scratch(name, insects_data, tmp_path):
    size, *extra = LEARN[name]
    out = tmp_path / name
    result = _train(
        insects_data,
        out,
        "--model",
        name,
        "--weights",
        "none",
        "--img-size",
        size,
        "--no-augment",
        *extra,
    )
    assert result.exit_code == 0, result.output
    m = _metrics(out)
    assert m["learned"] and m["accuracy"] >= 0.55, (name, m["accuracy"])  # chance: 1/3
