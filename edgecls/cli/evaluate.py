"""`edgecls evaluate`, `edgecls predict` and `edgecls compare`: any model (.keras, .tflite, .onnx),
run folder or bundle on images."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from edgecls.bundle.formats import FORMATS
from edgecls.cli.common import command, console, err
from edgecls.cli.train import metrics_table

_SUFFIXES = [".keras", *(f.suffix for f in FORMATS.values())]
MODEL_HELP = f"{', '.join(_SUFFIXES[:-1])} or {_SUFFIXES[-1]}"


@command()
def evaluate(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    data: Path = typer.Option(..., help="DIR/<class>/* (or a split layout: its test/ is used)"),
    out: Path | None = typer.Option(None, help="report folder; default <model folder>/eval"),
    labels: Path | None = typer.Option(
        None, help="labels.txt; default: the artifact's own, or labels.txt beside the model"
    ),
):
    """Metrics, classification report and confusion matrix of any model on a labelled folder."""
    from edgecls.evaluate import evaluate_model

    unread = []

    def skipped(path, why):
        unread.append(path)
        err.print(f"skipped {path}: {why}", markup=False)

    m, out = evaluate_model(model, data, out, labels, on_skip=skipped)
    metrics_table(m, f"{model} on {data}")
    console.print(f"reports: {out}", highlight=False)
    if unread:  # the reports stand for the images read; a script must still learn of the rest
        n = len(unread)
        err.print(f"not read: {n} image{'s' * (n != 1)} (named above); the metrics leave them out")
        raise typer.Exit(1)


@command()
def predict(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    images: list[Path] = typer.Argument(..., help="image files"),
    top_k: int = typer.Option(1, min=1, help="show the K most likely labels"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per image"),
    labels: Path | None = typer.Option(
        None, help="labels.txt; default: the artifact's own, or labels.txt beside the model"
    ),
):
    """Label and confidence for each image."""
    from edgecls.evaluate import predict_images

    failed = []

    def skipped(path, why):
        failed.append(path)
        err.print(f"skipped {why}", markup=False)

    for p in predict_images(model, images, top_k, labels, on_skip=skipped):
        top = [{"label": label, "confidence": round(conf, 6)} for label, conf in p.top]
        if as_json:
            print(json.dumps({"image": str(p.image), **top[0], "top_k": top}))
        else:
            shown = ", ".join(f"{t['label']} {t['confidence']:.3f}" for t in top)
            console.print(f"{p.image}: {shown}", highlight=False)
    if failed:
        raise typer.Exit(1)


COMPARED_HELP = "run folder, bundle folder, or a model or bundle artifact file"


@command()
def compare(
    a: Path = typer.Argument(..., help=f"A, the champion: {COMPARED_HELP}"),
    b: Path = typer.Argument(..., help=f"B, the challenger: {COMPARED_HELP}"),
    data: Path = typer.Option(
        ..., help="the holdout: DIR/<class>/* (or a split layout: its test/ is used)"
    ),
    out: Path | None = typer.Option(None, help="report folder; default compare-<A>-vs-<B>"),
    max_images: int = typer.Option(200, min=0, help="most thumbnails on disagree.html"),
):
    """A against B on a holdout: accuracy and per-class recall of each, the change with McNemar's
    exact test, and a page of the images where they disagree."""
    from edgecls.compare import compare_models

    cmp = compare_models(a, b, data, out, max_images)
    for path, why in cmp.skipped:
        err.print(f"skipped {path}: {why}", markup=False)
    _comparison_table(cmp)
    console.print(
        f"b (A right, B wrong): {cmp.b_count}   c (A wrong, B right): {cmp.c_count}",
        highlight=False,
    )
    console.print(f"[bold]{cmp.verdict}[/]", highlight=False)
    console.print(f"report: {cmp.out}  (compare.md, compare.json, disagree.html)", highlight=False)
    if cmp.skipped:  # as for evaluate: the figures stand for the images read
        n = len(cmp.skipped)
        err.print(f"not read: {n} image{'s' * (n != 1)} (named above); the figures leave them out")
        raise typer.Exit(1)


def _comparison_table(cmp) -> None:
    table = Table(title=f"A: {cmp.a}\nB: {cmp.b}\non {cmp.holdout} ({len(cmp.truth)} images)")
    for col in ("", "A", "B", "change"):
        table.add_column(col, justify="left" if not col else "right")
    rows = [("accuracy", cmp.accuracy_a, cmp.accuracy_b)]
    recall_a, recall_b = cmp.recall(cmp.pred_a), cmp.recall(cmp.pred_b)
    rows += [(f"recall {c}", recall_a[c], recall_b[c]) for c in cmp.classes]
    for name, x, y in rows:
        table.add_row(name, f"{100 * x:.1f}%", f"{100 * y:.1f}%", f"{100 * (y - x):+.1f}")
    console.print(table)
