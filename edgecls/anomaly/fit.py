"""`edgecls train --task anomaly`: learn good images against synthetic defects, set the threshold
on held-out good images, write the run folder whole (train/runfolder.py) or not at all."""

from __future__ import annotations

import json
import signal

import numpy as np
from rich.console import Console

from edgecls.anomaly.config import AnomalyConfig, AnomalyResult
from edgecls.bundle.anomaly import LABELS, threshold_at
from edgecls.bundle.preprocess import InputSpec
from edgecls.durable import Interrupted, StopSignals
from edgecls.folders import FolderDataset, load_good_images
from edgecls.train.runfolder import RunFolder, check_out


def scan(config: AnomalyConfig, console: Console) -> FolderDataset:
    with console.status(f"reading {config.data}"):
        dataset = load_good_images(config.data, config.defects, config.split)
    s = dataset.splits
    bad = s["test"].counts(list(LABELS))[LABELS[1]]
    console.print(
        f"good images: {len(s['train'])} train, {len(s['val'])} for the threshold, "
        f"{len(s['test']) - bad} test; defects: {bad if config.defects else 'none given'}"
        + (f"; skipped {len(dataset.skipped)} unreadable" if dataset.skipped else ""),
        highlight=False,
        soft_wrap=True,
    )
    return dataset


def _compile(model, lr: float):
    import keras

    from edgecls.anomaly.model import CELL_LOSS, MAP, SCORE, cell_loss

    model.compile(
        keras.optimizers.Adam(lr),
        loss={SCORE: keras.losses.BinaryCrossentropy(from_logits=True), MAP: cell_loss},
        loss_weights={SCORE: 1.0, MAP: CELL_LOSS},
        metrics={SCORE: [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]},
    )


def fit(config: AnomalyConfig, model, good: np.ndarray, stops, console: Console) -> list[dict]:
    """Each epoch shows every good image once as it is and once with a fresh synthetic defect.
    A stop signal ends it at the next step (`Interrupted`)."""
    from edgecls.anomaly.model import MAP, SCORE, cell_targets, map_size
    from edgecls.anomaly.synthetic import pairs
    from edgecls.train.callbacks import stop_check

    rng, cells = np.random.default_rng(config.seed), map_size(model)
    history, epochs = [], config.epochs_for(len(good))
    for epoch in range(1, epochs + 1):
        x, y, masks = pairs(good, rng, config.augment)
        h = model.fit(
            x,
            {SCORE: y[:, None], MAP: cell_targets(masks, cells)},
            batch_size=config.batch_size,
            epochs=1,
            shuffle=True,
            verbose=0,
            callbacks=[stop_check(stops)],
        ).history
        row = {"epoch": epoch, "loss": h["loss"][-1], "accuracy": _metric(h, "accuracy")}
        history.append(row)
        console.print(
            f"epoch {epoch}/{epochs}: loss {row['loss']:.4f}, good vs synthetic defect "
            f"accuracy {row['accuracy']:.3f}",
            highlight=False,
        )
    return history


def _metric(history: dict, name: str) -> float:
    key = next(k for k in history if k.endswith(name))
    return float(history[key][-1])


def _learn(config: AnomalyConfig, good: np.ndarray, stops, console) -> tuple[object, list]:
    """(the {score, anomaly_map} model, its training history) by the path --weights picks."""
    if config.pretrained:
        return statistics_model(config, good, console), []
    from edgecls.anomaly.model import build

    model = build(config.img_size, config.width)
    _compile(model, config.lr)
    return model, fit(config, model, good, stops, console)


def statistics_model(config: AnomalyConfig, good: np.ndarray, console: Console):
    """The statistics path: a frozen backbone's features of the good images, their per-location
    means and pooled covariance; nothing trains."""
    from edgecls.anomaly.statistics import feature_model, fit_statistics, scorer
    from edgecls.train.models import ModelConfig

    backbone = ModelConfig("mobilenet-v2", config.img_size, config.alpha, config.weights)
    features = feature_model(backbone)
    with console.status(f"feature statistics of {len(good)} good images"):
        chunks = (
            np.asarray(features(good[i : i + 32].astype(np.float32), training=False))
            for i in range(0, len(good), 32)
        )
        kernel, center = fit_statistics(chunks, config.seed)
    console.print(
        f"statistics of {len(good)} good images over {center.shape[0]}x{center.shape[1]} "
        f"locations, {kernel.shape[1]} feature dimensions ({config.weights} backbone)",
        highlight=False,
    )
    return scorer(features, kernel, center)


def scores_of(model, spec: InputSpec, paths) -> np.ndarray:
    """The trained score (the map's maximum) of images read as the board reads them."""
    from edgecls.anomaly.model import SCORE

    out = [
        np.asarray(model(spec.load_batch(paths[i : i + 64]).astype(np.float32))[SCORE])[:, 0]
        for i in range(0, len(paths), 64)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_anomaly(config: AnomalyConfig, console: Console | None = None) -> AnomalyResult:
    """A stop signal before training ends leaves nothing: an earlier run at --out stays as it
    was (a run is only worth writing with its threshold set)."""
    import keras

    from edgecls.anomaly.model import deployable, map_size
    from edgecls.anomaly.report import report

    console = console or Console()
    check_out(config.out)
    spec = InputSpec(*config.img_size)
    with StopSignals() as stops:
        dataset = scan(config, console)
        keras.utils.set_random_seed(config.seed)
        with RunFolder(config.out) as run, stops.deferred():
            with console.status("decoding the good training images"):
                good = spec.load_batch(dataset.splits["train"].paths)
            try:
                model, history = _learn(config, good, stops, console)
            except (Interrupted, KeyboardInterrupt):
                raise Interrupted(stops.signal or signal.SIGINT) from None
            val = scores_of(model, spec, dataset.splits["val"].paths)
            threshold = threshold_at(val, config.max_false_reject)
            test = scores_of(model, spec, dataset.splits["test"].paths)
            metrics = report(config, dataset, history, val, test, threshold, run.staging)
            deployable(model, threshold).save(run.staging / "model.keras")
            (run.staging / "labels.txt").write_text("\n".join(LABELS) + "\n")
            # what export puts in the manifest: the scores' meaning, set by this training
            found = {"threshold": threshold, "map_size": list(map_size(model))}
            (run.staging / "config.json").write_text(json.dumps(config.to_dict() | found, indent=2))
            run.commit()
    return AnomalyResult(config.out, metrics, dataset, len(history))
