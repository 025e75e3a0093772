import json

import numpy as np
import pytest
from messy import write_messy_folder
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.evaluate import evaluate
from edgecls.folders import load_eval_split
from edgecls.keras_predictor import KerasPredictor
from edgecls.train.models import ModelConfig, build_model

CLASSES = ["beetles", "cockroach", "dragonflies"]
RUN_FILES = (
    "model.keras",
    "labels.txt",
    "config.json",
    "history.csv",
    "curves.png",
    "metrics.json",
    "classification_report.txt",
    "confusion_matrix.png",
    "skipped.txt",
)


def test_seed_cnn_has_the_seed_notebook_parameter_count():
    model = build_model(ModelConfig("seed-cnn", (180, 180)), 3)
    assert model.count_params() == 3_989_027


def test_messy_folder_trains_and_names_every_skipped_file(tmp_path):
    files = write_messy_folder(tmp_path / "data")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--img-size",
            "32",
            "--epochs",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    for p in files["bad"]:
        assert str(p) in result.output
    listed = (out / "skipped.txt").read_text()
    assert all(str(p) in listed for p in files["bad"])
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] > 0 and 0 <= m["accuracy"] <= 1
    assert set(m["per_class"]) == {"a", "b"}
    assert {"precision", "recall", "f1"} <= set(m["per_class"]["a"])
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["img_size"] == [32, 32] and config["seed"] == 42


def test_insects_run_learns(insects_run):
    m = json.loads((insects_run / "metrics.json").read_text())
    assert m["accuracy"] >= 0.7, m["accuracy"]
    assert (insects_run / "labels.txt").read_text().split() == CLASSES


def test_evaluation_is_repeatable_and_aligned(insects_run, insects_data):
    predictor = KerasPredictor(insects_run / "model.keras")
    classes = CLASSES
    split, _ = load_eval_split(insects_data, classes)
    first, second = evaluate(predictor, split, classes), evaluate(predictor, split, classes)
    assert np.array_equal(first.probs, second.probs)
    assert first.paths == split.paths
    # the predictions of image i belong to image i: predict one image at a time and compare
    for i in (0, len(split) // 2, len(split) - 1):
        from edgecls.bundle.preprocess import load_image

        single = predictor.predict(load_image(split.paths[i], predictor.input_size)[None])[0]
        assert np.allclose(single, first.probs[i], atol=1e-5)
    assert all(f"/{classes[y]}/" in str(p) for p, y in zip(first.paths, first.y_true, strict=True))


class OraclePredictor:
    """Reads the class from the image itself (class a is dark): any misalignment lowers accuracy."""

    input_size = (32, 32)

    def predict(self, batch):
        bright = batch.reshape(len(batch), -1).mean(axis=1) > 125
        return np.stack([~bright, bright], axis=1).astype(np.float32)


def test_labels_stay_aligned_with_predictions_through_batching(tmp_path):
    write_messy_folder(tmp_path, n_per_class=70)  # > one batch of 64 per class
    split, _ = load_eval_split(tmp_path, ["a", "b"])
    ev = evaluate(OraclePredictor(), split, ["a", "b"])
    assert ev.accuracy == 1.0


def test_evaluate_and_predict_commands(insects_run, insects_data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(insects_run / "model.keras"),
            "--data",
            str(insects_data),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    ref = json.loads((insects_run / "metrics.json").read_text())
    assert m["n"] == ref["n"] and m["accuracy"] == pytest.approx(ref["accuracy"])

    images = sorted((insects_data / "test" / "beetles").glob("*.jpg"))[:2]
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    result = runner.invoke(
        app,
        [
            "predict",
            str(insects_run / "model.keras"),
            *map(str, images),
            str(bad),
            "--json",
            "--top-k",
            "2",
        ],
    )
    assert result.exit_code == 1  # one image could not be read
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert all(len(r["top_k"]) == 2 and r["label"] in CLASSES for r in rows)
    assert str(bad) in result.output


def test_not_a_model_is_a_one_line_error(tmp_path):
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    result = CliRunner().invoke(app, ["predict", str(fake), str(fake)])
    assert result.exit_code == 2
    assert "not a Keras model" in result.output and "Traceback" not in result.output


def test_interrupt_keeps_best_weights_and_writes_reports(tmp_path, monkeypatch):
    import edgecls.train.fit as train_mod

    write_messy_folder(tmp_path / "data")
    original = train_mod._keras_callbacks

    def with_interrupt(*args, **kwargs):
        import keras

        class CtrlC(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    raise KeyboardInterrupt

        early, callbacks = original(*args, **kwargs)
        return early, [*callbacks, CtrlC()]

    monkeypatch.setattr(train_mod, "_keras_callbacks", with_interrupt)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--img-size",
            "32",
            "--epochs",
            "20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 130, result.output  # the README's Ctrl-C: `train && export` stops
    assert "interrupted" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["interrupted"] is True and m["epochs_run"] == 2
    for name in RUN_FILES:
        assert (out / name).is_file(), name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet-v2", "mobilenet-v3-small"])
def test_backbones_train_one_epoch_without_imagenet(name, insects_data, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(insects_data),
            "--model",
            name,
            "--weights",
            "none",
            "--img-size",
            "96",
            "--epochs",
            "1",
            "--alpha",
            "0.35" if name == "mobilenet-v2" else "0.75",
            "--out",
            str(tmp_path / name),
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / name / "metrics.json").read_text())
    n_test = sum(1 for p in (insects_data / "test").rglob("*.jpg"))
    assert m["n"] == n_test and m["epochs_run"] == 1


def test_missing_weights_file_is_a_clear_error(insects_data, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(insects_data),
            "--model",
            "mobilenet-v2",
            "--weights",
            str(tmp_path / "nope.h5"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "nope.h5" in result.output


def test_a_model_that_did_not_learn_is_called_out(tmp_path):
    """Labels that carry no signal: the run must say the model is no better than chance."""
    import shutil

    write_messy_folder(tmp_path / "src", n_per_class=20)
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
    images = sorted((tmp_path / "src").rglob("*_0*.jpg"))
    for i, p in enumerate(images):  # shuffle the classes apart from the images
        shutil.copy(p, data / ("a" if i % 2 else "b") / f"{i:03d}.jpg")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--img-size",
            "32",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--lr",
            "1e-6",
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["learned"] is False and "did not learn" in result.output
    # the advice points at something that can learn: a backbone trained from scratch
    assert "--model mobilenet-v2 --weights none" in result.output
