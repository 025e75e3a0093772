"""Training that learns every time: scratch backbones, transfer from a saved backbone, the
recipe registry, determinism, bounded caching, and run folders that are whole or untouched."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.errors import EdgeclsError
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


TINY = ("--img-size", "32", "--epochs", "2", "--batch-size", "16")


def test_deterministic_reruns_give_identical_metrics(tmp_path):
    from messy import write_messy_folder

    write_messy_folder(tmp_path / "data", n_per_class=30)
    runs = [tmp_path / "first", tmp_path / "second"]
    for run in runs:  # augmentation on: its random ops are seeded and deterministic too
        result = _train(tmp_path / "data", run, *TINY, "--deterministic", "--seed", "5")
        assert result.exit_code == 0, result.output
    first, second = (_metrics(r) for r in runs)
    assert first == second
    history = [(r / "history.csv").read_text() for r in runs]
    assert history[0] == history[1] and len(history[0].splitlines()) == 3
    assert json.loads((runs[0] / "config.json").read_text())["deterministic"] is True


def test_a_failed_run_leaves_an_existing_run_folder_exactly_as_it_was(tmp_path, monkeypatch):
    from messy import write_messy_folder

    import edgecls.train.fit as fit_mod

    write_messy_folder(tmp_path / "data", n_per_class=20)
    run = tmp_path / "runs" / "r"
    result = _train(tmp_path / "data", run, *TINY, "--mixed-precision")
    assert result.exit_code == 0, result.output
    assert "--mixed-precision: no GPU here" in result.output  # CPU: one line, float32
    before = _snapshot(run)
    assert "model.keras" in before and ".scratch" not in str(before)

    # unknown model, and no network for ImageNet weights: one line each, nothing touched
    result = _train(tmp_path / "data", run, "--model", "nope")
    assert result.exit_code == 2 and "--model 'nope' is not known" in result.output

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_network)
    result = _train(tmp_path / "data", run, *TINY, "--model", "mobilenet-v2")
    assert result.exit_code == 2 and "could not download ImageNet weights" in result.output

    # a failure in the middle of training (here: a full disk)
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fit_mod, "run_epochs", disk_full)
    result = _train(tmp_path / "data", run, *TINY)
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert "it is as it was" in result.output and "Traceback" not in result.output
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["r"]  # no staging left behind


def test_out_that_is_not_a_run_folder_is_refused(tmp_path):
    from messy import write_messy_folder

    write_messy_folder(tmp_path / "data", n_per_class=10)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    result = _train(tmp_path / "data", mine, *TINY)
    assert result.exit_code == 2
    assert "not an edgecls run folder" in result.output and "Traceback" not in result.output
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    assert (mine / "thesis.txt").read_text() == "precious"


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed_as_it_is(tmp_path):
    import os
    import shutil

    from messy import write_messy_folder

    write_messy_folder(tmp_path / "data", n_per_class=10)
    a = tmp_path / "data" / "a"
    raw = os.path.join(os.fsencode(a), b"caf\xe9.jpg")  # Latin-1 from an old camera or share
    shutil.copy(a / "a_000.jpg", raw)
    result = _train(tmp_path / "data", tmp_path / "run", *TINY)
    assert result.exit_code == 0, result.output
    skipped = (tmp_path / "run" / "skipped.txt").read_bytes()
    assert b"caf\xe9.jpg\tits name is not UTF-8" in skipped  # the file's own bytes, findable


@pytest.mark.parametrize("name", ["ok ", "ok\n", "\tok"])
def test_a_class_folder_whose_name_a_label_cannot_hold_is_refused(tmp_path, name):
    from messy import write_messy_folder

    write_messy_folder(tmp_path / "data", n_per_class=4)
    (tmp_path / "data" / "a").rename(tmp_path / "data" / name)
    result = _train(tmp_path / "data", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "class folder" in result.output and "rename the folder" in result.output
    assert not (tmp_path / "run").exists()


def test_config_json_names_the_data_from_wherever_the_run_is_used(tmp_path, monkeypatch):
    """export and explain read the training data again, perhaps from another folder."""
    from edgecls.train import TrainConfig

    monkeypatch.chdir(tmp_path)
    d = TrainConfig(data=Path("photos"), out=Path("runs/x")).to_dict()
    assert d["data"] == str(tmp_path / "photos") and d["out"] == str(tmp_path / "runs" / "x")


@pytest.mark.parametrize("what", ["run folder", "bundle", "report"])
@pytest.mark.parametrize("out", [".", ".."])
def test_an_out_that_is_the_working_folder_is_refused(tmp_path, monkeypatch, what, out):
    """`--out .` once crashed (the staging folder's name came from the empty name); swapping
    it in would replace the folder the user's shell is in, so it is refused at the start."""
    from edgecls.explain.pipeline import _check_out
    from edgecls.export.bundle_dir import check_destination
    from edgecls.train.runfolder import RunFolder

    here = tmp_path / "here"
    here.mkdir()
    (here / "mine.txt").write_text("precious")
    monkeypatch.chdir(here)
    check = {
        "run folder": lambda: RunFolder(Path(out)),
        "bundle": lambda: check_destination(Path(out), here / "model.keras"),
        "report": lambda: _check_out(Path(out)),
    }[what]
    with pytest.raises(EdgeclsError, match=rf"--out {re.escape(out)}: is the folder you are in"):
        check()
    assert [p.name for p in tmp_path.iterdir()] == ["here"]
    assert [p.name for p in here.iterdir()] == ["mine.txt"]


def test_decoded_images_past_the_memory_budget_go_to_a_disk_cache(tmp_path):
    from messy import write_messy_folder

    from edgecls.folders import load_eval_split
    from edgecls.train.pipeline import CachePolicy, tf_dataset

    write_messy_folder(tmp_path / "data", n_per_class=12)
    split, _ = load_eval_split(tmp_path / "data", ["a", "b"])
    assert CachePolicy("auto", 1, tmp_path).choose(10, (64, 64)) == "memory"
    assert CachePolicy("auto", 1, tmp_path).choose(100, (64, 64)) == "disk"
    assert CachePolicy("auto", 1, None).choose(100, (64, 64)) == "none"  # stream instead

    def contents(policy):
        ds = tf_dataset(split, (32, 32), 5, shuffle=True, seed=1, cache=policy, name="t")
        batches = [(x.numpy(), y.numpy()) for epoch in range(2) for x, y in ds]
        pairs = sorted(
            (int(y), x.tobytes()) for xb, yb in batches for x, y in zip(xb, yb, strict=True)
        )
        return pairs

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    reference = contents(CachePolicy("memory"))
    assert contents(CachePolicy("disk", 0, scratch)) == reference
    assert any(p.name.startswith("t-0") for p in scratch.iterdir())  # the cache file
    assert contents(CachePolicy("none")) == reference


BACKBONE = ("--model", "mobilenet-v2", "--alpha", "0.35", "--img-size", "96", "--batch-size", "16")


def _last(run: Path) -> dict[str, float]:
    rows = (run / "history.csv").read_text().splitlines()
    return {k: float(v) for k, v in zip(rows[0].split(","), rows[-1].split(","), strict=True)}


@pytest.mark.slow
def test_a_backbone_saved_by_one_run_transfers_to_another(insects_data, tmp_path):
    """Pretrain on the insects, save the backbone, fine-tune all of it on another site's insect
    photos (a new sample, another seed): at the same short budget it learns faster, and tests
    better, than the same network from scratch.

    `--deterministic` is deterministic on one CPU, not across CPUs, so the margins are set from
    several seeds on an AVX2 machine (seeds 1-3: final training loss 0.45-0.87 lower, test
    accuracy 0.26-0.31 higher, scratch at chance) and sit well below the smallest of them."""
    from edgecls.samples import SampleSpec, write_sample

    target = tmp_path / "another-site"
    write_sample("insects", target, SampleSpec(n_train=60, n_test=30, size=96, seed=2))
    common = (*BACKBONE, "--no-augment", "--deterministic", "--seed", "1")
    pre = tmp_path / "pretrain"
    result = _train(
        insects_data, pre, *common, "--weights", "none", "--epochs", "8", "--save-backbone"
    )
    assert result.exit_code == 0, result.output
    saved = pre / "backbone.weights.h5"
    assert saved.is_file() and _metrics(pre)["learned"]

    budget = ("--epochs", "3")
    scratch, transfer = tmp_path / "scratch", tmp_path / "transfer"
    result = _train(target, scratch, *common, *budget, "--weights", "none")
    assert result.exit_code == 0, result.output
    result = _train(
        target, transfer, *common, *budget, "--weights", str(saved), "--fine-tune", "1000"
    )
    assert result.exit_code == 0, result.output
    assert json.loads((transfer / "config.json").read_text())["model"]["weights"] == str(saved)
    s, t = _last(scratch), _last(transfer)
    assert t["loss"] < s["loss"] - 0.2, (t, s)
    a_scratch, a_transfer = _metrics(scratch)["accuracy"], _metrics(transfer)["accuracy"]
    assert a_transfer > a_scratch + 0.1, (a_transfer, a_scratch)


def test_the_train_step_runs_under_mixed_float16_with_a_float32_output():
    """The GPU path of --mixed-precision, forced on the CPU: loss scaling and float32 output."""
    import keras
    import tensorflow as tf

    from edgecls.train.epochs import Steps

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_model(ModelConfig("seed-cnn", (32, 32)), 2)
            optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert (
        model.layers[1].compute_dtype == "float16" and model.layers[-1].compute_dtype == "float32"
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 127).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    assert model(x[:1]).dtype == "float32"
    steps = Steps(strategy, model, optimizer)
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    before = [np.array(w) for w in model.trainable_weights]
    sums = [np.asarray(steps.train(iterator)) for _ in range(3)]
    assert all(np.isfinite(s).all() and s[2] == 8 for s in sums)
    assert any(
        not np.array_equal(b, np.array(w))
        for b, w in zip(before, model.trainable_weights, strict=True)
    )
