"""`edgecls train`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgecls.cli.common import command, console
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
    metrics_table(result.metrics, f"{result.out} (test split)")
    console.print(f"model: {result.out / 'model.keras'}")


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
