"""`edgecls train`: a labelled folder in, a run folder with the model and its reports out."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgecls import __version__
from edgecls.errors import EdgeclsError
from edgecls.evaluate import evaluate, write_reports
from edgecls.folders import FolderDataset, SplitConfig, load_folder_dataset
from edgecls.runtime.preprocess import InputSpec
from edgecls.train.models import ModelConfig, augmentation, build_model
from edgecls.train.pipeline import tf_dataset


@dataclass(frozen=True)
class TrainConfig:
    """All it takes to reproduce a run; written to the run folder as config.json."""

    data: Path
    out: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 42
    augment: bool = True
    patience: int = 5
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"], d["out"] = str(self.data), str(self.out)
        d["edgecls_version"] = __version__
        d["input"] = InputSpec(*self.model.img_size).to_dict()
        return d


@dataclass
class TrainResult:
    out: Path
    metrics: dict
    dataset: FolderDataset
    epochs_run: int
    best_epoch: int
    interrupted: bool


def unique_run_dir(base: Path) -> Path:
    """runs/NAME, or runs/NAME-2, -3, … so a second run never overwrites the first."""
    if not base.exists():
        return base
    i = 2
    while base.with_name(f"{base.name}-{i}").exists():
        i += 1
    return base.with_name(f"{base.name}-{i}")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _keras_callbacks(progress: Progress, steps: int, history: list[dict], patience: int):
    import keras

    class RichProgress(keras.callbacks.Callback):
        """A bar per epoch with live loss/accuracy; records the history as it goes."""

        def on_epoch_begin(self, epoch, logs=None):
            self.task = progress.add_task(
                f"epoch {epoch + 1}/{self.params['epochs']}", total=steps, info=""
            )

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            progress.update(
                self.task,
                completed=batch + 1,
                info=f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f}",
            )

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            history.append({"epoch": epoch + 1, **logs})
            progress.update(
                self.task,
                completed=steps,
                info=(
                    f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f} "
                    f"val_loss {logs.get('val_loss', 0):.3f} "
                    f"val_acc {logs.get('val_accuracy', 0):.3f}"
                ),
            )

    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
    )
    return early, [RichProgress(), early]


def write_history(history: list[dict], out: Path) -> None:
    if not history:
        return
    keys = list(history[0])
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h.get(key) for h in history], "o-", label=f"train {key}")
        if f"val_{key}" in history[0]:
            ax.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def save_model_atomic(model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    console = console or Console()
    if config.epochs < 1 or config.batch_size < 1:
        raise EdgeclsError("--epochs and --batch-size must be at least 1")
    with _progress(console) as progress:
        task = progress.add_task("checking images", total=None, info="")
        dataset = load_folder_dataset(
            config.data, config.split, progress=lambda: progress.advance(task)
        )
        progress.update(task, total=progress.tasks[task].completed)
    train_split, val_split, test_split = (dataset.splits.get(n) for n in ("train", "val", "test"))
    console.print(
        f"[bold]{config.data}[/] ({dataset.layout}): {len(dataset.classes)} classes "
        f"{dataset.classes}; train {len(train_split)}, val {len(val_split)}, "
        f"test {len(test_split)}; "
        f"skipped {len(dataset.skipped)}",
        highlight=False,
    )
    for path, why in dataset.skipped[:10]:
        console.print(f"  [yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True)
    if len(dataset.skipped) > 10:
        console.print(f"  … and {len(dataset.skipped) - 10} more (see skipped.txt)")
    if len(val_split) == 0:
        raise EdgeclsError(f"{config.data}: too few images to hold out a validation split")

    import keras

    keras.utils.set_random_seed(config.seed)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    dataset.write_skipped(out / "skipped.txt")
    (out / "labels.txt").write_text("\n".join(dataset.classes) + "\n")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    model = build_model(config.model, len(dataset.classes))
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    size = config.model.img_size
    aug = augmentation(config.seed) if config.augment else None
    ds_train = tf_dataset(
        train_split, size, config.batch_size, shuffle=True, seed=config.seed, augment=aug
    )
    ds_val = tf_dataset(val_split, size, config.batch_size)
    steps = -(-len(train_split) // config.batch_size)

    history: list[dict] = []
    interrupted = False
    with _progress(console) as progress:
        early, callbacks = _keras_callbacks(progress, steps, history, config.patience)
        try:
            model.fit(
                ds_train,
                validation_data=ds_val,
                epochs=config.epochs,
                callbacks=callbacks,
                verbose=0,
                shuffle=False,
            )
        except KeyboardInterrupt:
            interrupted = True
            if early.best_weights is not None:
                model.set_weights(early.best_weights)
    best_epoch = (
        min(history, key=lambda h: h.get("val_loss", float("inf")))["epoch"] if history else 0
    )
    if interrupted:
        console.print(
            f"[yellow]interrupted[/]: keeping the best weights so far (epoch {best_epoch})"
        )
    save_model_atomic(model, out / "model.keras")
    write_history(history, out)

    from edgecls.keras_predictor import KerasPredictor

    eval_split = test_split if len(test_split) else val_split
    ev = evaluate(KerasPredictor.from_model(model), eval_split, dataset.classes)
    chance = float(np.bincount(ev.y_true).max() / len(ev.y_true)) if len(ev.y_true) else 0.0
    learned = bool(ev.accuracy > chance + 0.02)
    extra = {
        "split": "test" if len(test_split) else "val",
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "interrupted": interrupted,
        "majority_class_accuracy": chance,
        "learned": learned,
    }
    m = write_reports(ev, out, extra)
    if not learned:
        console.print(
            f"[bold red]warning:[/] the model did not learn: test accuracy {ev.accuracy:.3f} is no "
            f"better than always answering the largest class ({chance:.3f}). Train longer "
            "(--epochs), with a lower --lr or another --seed, or use a backbone "
            "(--model mobilenet-v2)",
            highlight=False,
            soft_wrap=True,
        )
    return TrainResult(out, m, dataset, len(history), best_epoch, interrupted)
