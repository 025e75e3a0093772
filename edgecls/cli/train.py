"""`edgecls train`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgecls.cli.common import command, console
from edgecls.errors import EdgeclsError
from edgecls.train.distribute import STRATEGIES
from edgecls.train.models import MODELS
from edgecls.train.pipeline import CACHE_MODES


def _size(value: int) -> tuple[int, int]:
    if value < 16:
        raise EdgeclsError(f"--img-size {value}: must be at least 16 pixels")
    return (value, value)


DEFAULT_SAMPLE = Path("runs/data/casting-sample")
RECIPE = "default: the model's recipe"


@command()
def train(
    data: Path | None = typer.Option(
        None, help="DIR/<class>/* or DIR/{train,val,test}/<class>/*; default: the casting sample"
    ),
    model: str = typer.Option("seed-cnn", help=f"one of: {MODELS.choices()}"),
    img_size: int = typer.Option(96, help="square input side in pixels"),
    epochs: int | None = typer.Option(None, help=f"most epochs ({RECIPE})"),
    batch_size: int = typer.Option(32, help="global batch, split across replicas and workers"),
    lr: float | None = typer.Option(None, help=f"learning rate ({RECIPE})"),
    seed: int = typer.Option(42),
    out: Path | None = typer.Option(None, help="run folder; default runs/<data>-<model>"),
    augment: bool = typer.Option(True, help="flip, rotation, zoom, contrast"),
    alpha: float = typer.Option(1.0, help="MobileNet width multiplier"),
    weights: str = typer.Option(
        "imagenet",
        help="backbone weights: imagenet (frozen, then --fine-tune), none (all layers learn "
        "from scratch) or a file (e.g. backbone.weights.h5 from --save-backbone)",
    ),
    fine_tune: int = typer.Option(0, help="pretrained: unfreeze the top N backbone layers"),
    patience: int | None = typer.Option(None, help=f"early stopping on val_loss ({RECIPE})"),
    monitor: str | None = typer.Option(
        None, help=f"val_loss or val_accuracy: early stopping and best weights ({RECIPE})"
    ),
    val_fraction: float = typer.Option(0.15),
    test_fraction: float = typer.Option(0.15),
    strategy: str = typer.Option(
        "auto", help=f"{STRATEGIES.choices().replace(', ', '|')}; multi-worker reads TF_CONFIG"
    ),
    deterministic: bool = typer.Option(
        False, help="TF op determinism: identical metrics on a rerun, slower"
    ),
    mixed_precision: bool = typer.Option(False, help="mixed_float16 on a GPU"),
    cache: str = typer.Option(
        "auto", help=f"decoded images: {'|'.join(CACHE_MODES)}; auto: memory within --cache-mb"
    ),
    cache_mb: int = typer.Option(1024, help="memory budget for decoded images (MB)"),
    save_backbone: bool = typer.Option(
        False, help="also write backbone.weights.h5, for --weights PATH in another run"
    ),
):
    """Train a classifier and write model.keras, labels, metrics and reports to a run folder."""
    config = train_config(**locals())
    from edgecls.train import train as run_training

    result = run_training(config, console)
    if result.out is None:
        console.print("done: this worker is not the chief; the chief wrote the run folder")
        return
    metrics_table(result.metrics, f"{result.out} (test split)")
    console.print(f"model: {result.out / 'model.keras'}")
    if save_backbone:
        console.print(f"backbone: {result.out / 'backbone.weights.h5'}")


def train_config(data: Path | None, model: str, out: Path | None, **o):
    """The command's options as a TrainConfig; unknown names fail before any work."""
    from edgecls.folders import SplitConfig
    from edgecls.train import TrainConfig, unique_run_dir
    from edgecls.train.models import ModelConfig

    MODELS.get(model)  # one line for an unknown name, before the sample is written
    STRATEGIES.get(o["strategy"])
    if data is None:
        data = DEFAULT_SAMPLE
        if not (data / "train").is_dir():
            from edgecls.samples import write_sample

            console.print(f"no --data: writing the casting sample to {data}")
            write_sample("casting", data)
    size = _size(o.pop("img_size"))
    model_config = ModelConfig(model, size, o.pop("alpha"), o.pop("weights"), o.pop("fine_tune"))
    split = SplitConfig(o.pop("val_fraction"), o.pop("test_fraction"), o["seed"])
    return TrainConfig(
        data=data,
        out=out or unique_run_dir(Path("runs") / f"{data.resolve().name}-{model}"),
        model=model_config,
        split=split,
        **o,
    )


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
