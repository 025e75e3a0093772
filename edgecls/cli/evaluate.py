"""`edgecls evaluate` and `edgecls predict`: any model (.keras, .tflite, .onnx) on images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgecls.cli.common import command, console, err
from edgecls.cli.train import metrics_table
from edgecls.errors import EdgeclsError


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
    metrics_table(m, f"{model} on {data}")
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
