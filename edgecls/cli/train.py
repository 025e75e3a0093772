"""`edgecls train`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.table import Table

from edgecls.cli.common import command, console, table_parameters, with_signature
from edgecls.train.config import TrainOptions

DEFAULT_SAMPLE = Path("runs/data/casting-sample")


def _train(**options):
    """Train a classifier and write model.keras, labels, metrics and reports to a run folder."""
    from edgecls.train import train as run_training

    result = run_training(train_config(TrainOptions(**options)), console)
    if result.out is None:
        console.print("done: this worker is not the chief; the chief wrote the run folder")
        return
    metrics_table(result.metrics, f"{result.out} (test split)")
    console.print(f"model: {result.out / 'model.keras'}")
    if options["save_backbone"]:
        console.print(f"backbone: {result.out / 'backbone.weights.h5'}")


def train_config(options: TrainOptions):
    """The options as a TrainConfig; with no --data, the casting sample (written once)."""
    options.check()  # before the sample is written
    if options.data is None:
        if not (DEFAULT_SAMPLE / "train").is_dir():
            from edgecls.samples import write_sample

            console.print(f"no --data: writing the casting sample to {DEFAULT_SAMPLE}")
            write_sample("casting", DEFAULT_SAMPLE)
        options = replace(options, data=DEFAULT_SAMPLE)
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
