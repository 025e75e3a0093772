"""`edgecls train`, `evaluate` and `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from edgecls.cli.common import command, console, err
from edgecls.errors import EdgeclsError


def _size(value: int) -> tuple[int, int]:
    if value < 16:
        raise EdgeclsError(f"--img-size {value}: must be at least 16 pixels")
    return (value, value)


DEFAULT_SAMPLE = Path("runs/data/casting-sample")


@command()
def train(
    data: Path | None = typer.Option(
        None, help="DIR/<class>/* or DIR/{train,val,test}/<class>/*; default: the casting sample"
    ),
    model: str = typer.Option("seed-cnn", help="seed-cnn, mobilenet-v2, mobilenet-v3-small"),
    img_size: int = typer.Option(96, help="square input side in pixels"),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3, help="learning rate"),
    seed: int = typer.Option(42),
    out: Path | None = typer.Option(None, help="run folder; default runs/<data>-<model>"),
    augment: bool = typer.Option(True, help="flip, rotation, zoom, contrast"),
    alpha: float = typer.Option(1.0, help="MobileNet width multiplier"),
    weights: str = typer.Option("imagenet", help="backbone weights: imagenet, none or a file"),
    fine_tune: int = typer.Option(0, help="unfreeze the top N backbone layers"),
    patience: int = typer.Option(5, help="early-stopping patience in epochs (val_loss)"),
    val_fraction: float = typer.Option(0.15),
    test_fraction: float = typer.Option(0.15),
):
    """Train a classifier and write model.keras, labels, metrics and reports to a run folder."""
    from edgecls.folders import SplitConfig
    from edgecls.train import TrainConfig, unique_run_dir
    from edgecls.train import train as run_training
    from edgecls.train.models import ModelConfig

    if data is None:
        data = DEFAULT_SAMPLE
        if not (data / "train").is_dir():
            from edgecls.samples import write_sample

            console.print(f"no --data: writing the casting sample to {data}")
            write_sample("casting", data)
    name = f"{data.resolve().name}-{model}"
    config = TrainConfig(
        data=data,
        out=out or unique_run_dir(Path("runs") / name),
        model=ModelConfig(model, _size(img_size), alpha, weights, fine_tune),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=augment,
        patience=patience,
        split=SplitConfig(val_fraction, test_fraction, seed),
    )
    result = run_training(config, console)
    _metrics_table(result.metrics, f"{result.out} (test split)")
    console.print(f"model: {result.out / 'model.keras'}")


def _metrics_table(m: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("class", "precision", "recall", "f1", "n"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, c in m["per_class"].items():
        table.add_row(
            name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])
        )
    table.add_row("[bold]accuracy[/]", "", "", f"[bold]{m['accuracy']:.3f}[/]", str(m["n"]))
    console.print(table)


def _labels_for(model: Path, labels: Path | None) -> list[str]:
    from edgecls.runtime.backends import load_labels

    if labels is None:
        labels = model.parent / "labels.txt"
        if not labels.is_file():
            raise EdgeclsError(f"no labels.txt beside {model}: pass --labels FILE")
    return load_labels(labels)


@command()
def evaluate(
    model: Path = typer.Argument(..., help=".keras, .tflite or .onnx"),
    data: Path = typer.Option(..., help="DIR/<class>/* (or a split layout: its test/ is used)"),
    out: Path | None = typer.Option(None, help="report folder; default <model folder>/eval"),
    labels: Path | None = typer.Option(None, help="labels.txt; default beside the model"),
):
    """Metrics, classification report and confusion matrix of any model on a labelled folder."""
    from edgecls.evaluate import evaluate as run_eval
    from edgecls.evaluate import write_reports
    from edgecls.folders import load_eval_split
    from edgecls.runtime.backends import check_outputs, load_predictor

    classes = _labels_for(model, labels)
    predictor = load_predictor(model)
    check_outputs(predictor, classes, model)
    split, skipped = load_eval_split(data, classes)
    for path, why in skipped:
        err.print(f"skipped {path}: {why}", markup=False)
    out = out or model.parent / "eval"
    m = write_reports(
        run_eval(predictor, split, classes), out, {"model": str(model), "data": str(data)}
    )
    _metrics_table(m, f"{model} on {data}")
    console.print(f"reports: {out}")


@command()
def predict(
    model: Path = typer.Argument(..., help=".keras, .tflite or .onnx"),
    images: list[Path] = typer.Argument(..., help="image files"),
    top_k: int = typer.Option(1, help="show the K most likely labels"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per image"),
    labels: Path | None = typer.Option(None, help="labels.txt; default beside the model"),
):
    """Label and confidence for each image."""
    from edgecls.runtime.backends import check_outputs, load_predictor
    from edgecls.runtime.preprocess import load_image

    classes = _labels_for(model, labels)
    predictor = load_predictor(model)
    check_outputs(predictor, classes, model)
    failed = 0
    for path in images:
        try:
            image = load_image(path, predictor.input_size)
        except EdgeclsError as exc:
            err.print(f"skipped {exc}", markup=False)
            failed += 1
            continue
        probs = predictor.predict(image[None])[0]
        order = probs.argsort()[::-1][: max(1, top_k)]
        top = [{"label": classes[i], "confidence": round(float(probs[i]), 6)} for i in order]
        if as_json:
            print(json.dumps({"image": str(path), **top[0], "top_k": top}))
        else:
            console.print(
                f"{path}: " + ", ".join(f"{t['label']} {t['confidence']:.3f}" for t in top),
                highlight=False,
            )
    if failed:
        raise typer.Exit(1)
