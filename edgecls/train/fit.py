"""`edgecls train`: a labelled folder in, a run folder with the model and its reports out.

The steps, in order: resolve the recipe, scan the folder, place the work (tf.distribute),
build the model, feed it, run the epochs, then (on the chief only) save and report, and swap
the finished run folder in."""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from edgecls.durable import Interrupted, StopSignals, new_scratch
from edgecls.errors import EdgeclsError
from edgecls.folders import FolderDataset, load_folders
from edgecls.train.callbacks import keras_callbacks as _keras_callbacks
from edgecls.train.callbacks import progress_bar, stop_check
from edgecls.train.config import TrainConfig, TrainResult
from edgecls.train.distribute import ClusterTask, cluster_task, determinism, make_strategy
from edgecls.train.epochs import LoopData, Steps, run_epochs
from edgecls.train.models import (
    MODELS,
    augmentation,
    check_weights,
    recipe_for,
)
from edgecls.train.pipeline import CachePolicy, Shard, tf_dataset
from edgecls.train.report import report
from edgecls.train.runfolder import RunFolder, check_out


def _shown(text) -> str:
    """A path (or a reason naming one) for the console: bytes that are not UTF-8 as escapes,
    brackets as brackets, not markup."""
    from rich.markup import escape

    return escape(str(text).encode("utf-8", "backslashreplace").decode("utf-8"))


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill what the user left to the model's recipe, and refuse what cannot train."""
    recipe = recipe_for(config.model)  # an unknown --model fails here, before anything
    config = replace(
        config,
        epochs=recipe.epochs if config.epochs is None else config.epochs,
        lr=recipe.lr if config.lr is None else config.lr,
        patience=recipe.patience if config.patience is None else config.patience,
        monitor=recipe.monitor if config.monitor is None else config.monitor,
    )
    if config.monitor not in ("val_loss", "val_accuracy"):
        raise EdgeclsError(f"--monitor {config.monitor!r}: choose val_loss or val_accuracy")
    if config.epochs < 1 or config.batch_size < 1:
        raise EdgeclsError("--epochs and --batch-size must be at least 1")
    if config.lr <= 0 or config.patience < 0:
        raise EdgeclsError("--lr must be positive and --patience 0 or more")
    if MODELS.get(config.model.name).pretrained is not None:
        check_weights(config.model)  # a missing --weights file, before minutes of scanning
    if config.save_backbone and MODELS.get(config.model.name).pretrained is None:
        raise EdgeclsError(f"--save-backbone: --model {config.model.name} has no backbone")
    CachePolicy(config.cache, config.cache_mb)  # validates
    return config


def scan(config: TrainConfig, console: Console) -> FolderDataset:
    """Validate every image in parallel (with progress) and split; say what was skipped."""
    with progress_bar(console) as progress:
        task = progress.add_task("checking images", total=None, info="")
        dataset = load_folders(
            config.folders,
            config.split,
            config.allow_new_classes,
            progress=lambda: progress.advance(task),
        )
        progress.update(task, total=progress.tasks[task].completed)
    named = ", ".join(map(str, config.folders))
    console.print(
        f"[bold]{_shown(named)}[/] ({dataset.layout}): {len(dataset.classes)} classes "
        f"{dataset.classes}; {_counts(dataset.splits)}; skipped {len(dataset.skipped)}",
        highlight=False,
    )
    if len(dataset.sources) > 1:
        for i, source in enumerate(dataset.sources):
            console.print(
                f"  {_shown(source.root)} ({source.layout}): {_counts(dataset.splits, i)}",
                highlight=False,
            )
    for path, why in dataset.skipped[:10]:
        console.print(
            f"  [yellow]skipped[/] {_shown(path)}: {_shown(why)}", highlight=False, soft_wrap=True
        )
    if len(dataset.skipped) > 10:
        console.print(f"  … and {len(dataset.skipped) - 10} more (see skipped.txt)")
    if len(dataset.splits["val"]) == 0:
        raise EdgeclsError(f"{named}: too few images to hold out a validation split")
    return dataset


def _counts(splits, source: int | None = None) -> str:
    """`train N, val N, test N`, of every folder or of one."""

    def n(split) -> int:
        return len(split) if source is None else split.source_of().count(source)

    return ", ".join(f"{name} {n(splits[name])}" for name in ("train", "val", "test"))


def build(config: TrainConfig, strategy, num_classes: int, console: Console):
    """The model and its optimizer, created under the strategy's scope."""
    import keras

    from edgecls.train.distribute import set_precision

    mixed = set_precision(config.mixed_precision, lambda m: console.print(f"[yellow]{m}[/]"))
    try:
        with strategy.scope():
            model = build_model_for(config, num_classes, strategy.num_replicas_in_sync)
            optimizer = keras.optimizers.Adam(config.lr)
            if mixed:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, optimizer


def build_model_for(config: TrainConfig, num_classes: int, replicas: int):
    """Across several replicas BatchNorm uses the global batch's statistics, so every worker
    keeps the same moving averages and the result matches a single-worker run."""
    import keras

    from edgecls.train.models import build_model

    model = build_model(config.model, num_classes)
    if replicas > 1:
        for layer in _all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def feed(config: TrainConfig, dataset: FolderDataset, strategy, scratch: Path) -> LoopData:
    """Train data sharded per input pipeline at a per-replica share of the global batch;
    validation whole on every worker."""
    size = config.model.img_size
    cache = CachePolicy(config.cache, config.cache_mb, scratch)
    train_split, val_split = dataset.splits["train"], dataset.splits["val"]
    aug = augmentation(config.seed) if config.augment else None

    def make(context):
        return tf_dataset(
            train_split,
            size,
            context.get_per_replica_batch_size(config.batch_size),
            shuffle=True,
            seed=config.seed + context.input_pipeline_id,
            augment=aug,
            cache=cache,
            shard=Shard(context.num_input_pipelines, context.input_pipeline_id),
            repeat=True,
            name="train",
        )

    # one memory budget for both: validation gets what training leaves
    val_cache = cache.after(cache.held_mb(len(train_split), size, shuffle=True))
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise EdgeclsError(
            f"--batch-size {config.batch_size}: must be a multiple of the {replicas} replicas"
        )
    return LoopData(
        train=strategy.distribute_datasets_from_function(make),
        val=tf_dataset(val_split, size, config.batch_size, cache=val_cache, name="val"),
        steps=-(-len(train_split) // config.batch_size),
    )


@dataclass
class Fitted:
    history: list[dict]
    best_epoch: int  # 1-based; 0 when no epoch finished
    interrupted: bool


def fit(config, model, optimizer, strategy, data: LoopData, console, stops=None) -> Fitted:
    """Run the epochs with progress; Ctrl-C, or a stop signal noted in `stops`, ends them at the
    next step and keeps the best weights so far."""
    history: list[dict] = []
    interrupted = False
    with progress_bar(console) as progress:
        early, callbacks = _keras_callbacks(
            progress, data.steps, history, config.patience, config.monitor
        )
        if stops is not None:
            callbacks = [*callbacks, stop_check(stops)]
        try:
            run_epochs(Steps(strategy, model, optimizer), data, config.epochs, callbacks)
        except KeyboardInterrupt:
            interrupted = True
            if early.best_weights is not None:
                model.set_weights(early.best_weights)
    return Fitted(history, early.best_epoch + 1 if history else 0, interrupted)


def train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) before the first epoch ends leaves nothing: an
    earlier run at --out stays as it was. Later, training ends at the next step and the run of
    what was trained so far is written whole, `stopped_by` naming the signal; a second signal
    abandons it. Staging and scratch folders go on every way out."""
    console = console or Console()
    config = resolve(config)
    task = cluster_task()
    if task.is_chief:
        check_out(config.out)  # refused before minutes of scanning, not after
    else:
        console = Console(quiet=True)
    with StopSignals() as stops:
        dataset = scan(config, console)
        strategy = make_strategy(config.strategy)  # before any other TensorFlow op
        with determinism(config.seed, config.deterministic), _workspace(config, task) as run:
            model, optimizer = build(config, strategy, len(dataset.classes), console)
            data = feed(config, dataset, strategy, run.scratch)
            with stops.deferred():  # a first signal ends the epochs at a step, then reports
                fitted = fit(config, model, optimizer, strategy, data, console, stops)
                if fitted.interrupted and (not fitted.history or stops.count > 1):
                    raise Interrupted(stops.signal or signal.SIGINT)  # nothing worth a run
                if not task.is_chief:
                    epochs, best = len(fitted.history), fitted.best_epoch
                    return TrainResult(None, {}, dataset, epochs, best, False, stops.signal)
                result = report(config, dataset, model, fitted, run.staging, console)
                run.commit()
    result.out, result.stopped_by = config.out, stops.signal
    return result


class _WorkerScratch:
    """What a worker that is not the chief gets instead of a run folder: a private temporary
    folder for cache files, removed at the end; it writes nothing else."""

    def __enter__(self):
        self.scratch = new_scratch("worker")  # PID in its name: a killed worker's is swept
        return self

    def __exit__(self, *exc_info):
        shutil.rmtree(self.scratch, ignore_errors=True)


def _workspace(config: TrainConfig, task: ClusterTask):
    return RunFolder(config.out) if task.is_chief else _WorkerScratch()
