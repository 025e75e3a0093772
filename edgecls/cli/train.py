"""`edgecls train`."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from edgecls.cli.common import command, console, err, table_parameters, with_signature
from edgecls.errors import EdgeclsError
from edgecls.train.config import TrainOptions

DEFAULT_SAMPLE = Path("runs/data/casting-sample")


def stopped(signum: int, what: str):
    """A stop signal ended the command after a clean stop: one line, and 128 + the signal (130
    Ctrl-C, 129 SIGHUP, 143 SIGTERM), so `train && export` never goes on with a cut-short run."""
    from edgecls.durable import signal_name

    err.print(f"interrupted ({signal_name(signum)}): {what}", highlight=False, soft_wrap=True)
    raise typer.Exit(128 + signum)


def _train(**options):
    """Train a classifier (or, --task anomaly, a scorer of good parts) and write model.keras,
    labels, metrics and reports to a run folder."""
    if options["task"] == "anomaly":
        return _train_anomaly(TrainOptions(**options))
    from edgecls.durable import Interrupted
    from edgecls.train import train as run_training

    config = train_config(TrainOptions(**options))
    try:
        result = run_training(config, console)
    except Interrupted as exc:
        done = f"the run was written to {config.out} just before" if exc.written else None
        stopped(exc.signum, done or f"no run was written; {config.out} is as it was")
    if result.out is not None:
        metrics_table(result.metrics, f"{result.out} (test split)")
        per_source_table(result.metrics.get("per_source"))
        console.print(f"model: {result.out / 'model.keras'}")
        if options["save_backbone"]:
            console.print(f"backbone: {result.out / 'backbone.weights.h5'}")
    elif not result.stopped_by:
        console.print("done: this worker is not the chief; the chief wrote the run folder")
    if result.interrupted or result.stopped_by:
        stopped(
            result.stopped_by or signal.SIGINT,
            f"{result.out or 'the run folder'} holds the model after {result.epochs_run} "
            f"epoch(s) (best: epoch {result.best_epoch}) and its reports",
        )


def _train_anomaly(options: TrainOptions) -> None:
    from edgecls.anomaly import train_anomaly
    from edgecls.durable import Interrupted

    options.check()
    if not options.data:
        raise EdgeclsError("--data: --task anomaly needs a folder of good images")
    config = options.to_anomaly_config()
    try:
        result = train_anomaly(config, console)
    except Interrupted as exc:
        stopped(exc.signum, f"no run was written; {config.out} is as it was")
    m, t = result.metrics, result.metrics["test"]
    line = f"threshold {m['threshold']:.4f} (false rejects: {100 * m['val']['false_reject']:.1f}% "
    line += f"of {m['val']['good']} held-out good images; {100 * t['false_reject']:.1f}% of "
    line += f"{t['good']} test good images)"
    if t["defects"]:
        line += (
            f"; defects found: {100 * t['recall']:.1f}% of {t['defects']}, AUROC {t['auroc']:.3f}"
        )
    console.print(line, highlight=False, soft_wrap=True)
    figures = "scores.png, roc.png" if t["defects"] else "scores.png"
    console.print(f"model: {result.out / 'model.keras'}; figures: {figures}")


def train_config(options: TrainOptions):
    """The options as a TrainConfig; with no --data, the casting sample (written once)."""
    options.check()  # before the sample is written
    if not options.data:
        if not (DEFAULT_SAMPLE / "train").is_dir():
            from edgecls.samples import write_sample

            console.print(f"no --data: writing the casting sample to {DEFAULT_SAMPLE}")
            write_sample("casting", DEFAULT_SAMPLE)
        options = replace(options, data=[DEFAULT_SAMPLE])
    return options.to_config()


command(name="train")(with_signature(_train, table_parameters(TrainOptions)))


def metrics_table(m: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("class", "precision", "recall", "f1", "n"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, c in m["per_class"].items():
        table.add_row(
            name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])
        )
    table.add_row("[bold]accuracy[/]", "", "", f"[bold]{m['accuracy']:.3f}[/]", str(m["n"]))
    console.print(table)


def per_source_table(rows: dict | None) -> None:
    """Accuracy on each --data folder's test images, where several were merged."""
    if not rows:
        return
    table = Table(title="accuracy per --data folder")
    for col in ("folder", "accuracy", "n"):
        table.add_column(col, justify="left" if col == "folder" else "right")
    for folder, r in rows.items():
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        table.add_row(folder, acc, str(r["n"]), style=None)
    console.print(table)
