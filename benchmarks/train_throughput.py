"""Training images/s: our tf.data pipeline against the seeds' one, same model, same step.

The seeds read folders with `keras.utils.image_dataset_from_directory` and no cache or
prefetch, so every epoch decodes every JPEG again in line with the training step. Ours decodes
in parallel once into a bounded cache and prefetches. Both feed the very same train step
(edgecls.train.epochs.Steps, on one device) of the same model; rounds alternate so that load
from other processes hits both alike. Prints one row per pipeline and the ratio.

    python benchmarks/train_throughput.py [--model seed-cnn] [--img-size 96] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def seeds_pipeline(train_dir: Path, size: int, batch: int):
    import keras

    return keras.utils.image_dataset_from_directory(
        train_dir, image_size=(size, size), batch_size=batch, seed=0, verbose=False
    )


def our_pipeline(train_dir: Path, size: int, batch: int):
    from edgecls.folders import load_folder_dataset
    from edgecls.train.pipeline import tf_dataset

    split = load_folder_dataset(train_dir.parent).splits["train"]
    return tf_dataset(split, (size, size), batch, shuffle=True, seed=0), len(split)


def images_per_second(steps, dataset, n_steps: int) -> float:
    """`n_steps` of the train step as training runs them (a repeating distributed dataset);
    images counted from what the step reports it saw. Without a step (`--input-only`): how fast
    the pipeline alone delivers batches, the most any step, a GPU's included, can be fed."""
    if steps is None:
        seen, start = 0, time.perf_counter()
        for x, _ in dataset.repeat().take(n_steps):
            seen += int(x.shape[0])
        return seen / (time.perf_counter() - start)
    iterator = iter(steps.strategy.experimental_distribute_dataset(dataset.repeat()))
    seen = 0.0
    start = time.perf_counter()
    for _ in range(n_steps):
        seen += float(steps.train(iterator)[2])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seed-cnn")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=400, help="images per class")
    parser.add_argument(
        "--input-only", action="store_true", help="the pipelines alone, without a train step"
    )
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from edgecls.samples import SampleSpec, write_sample
    from edgecls.train.epochs import Steps
    from edgecls.train.models import ModelConfig, build_model

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "casting"
        write_sample(
            "casting",
            data,
            SampleSpec(n_train=args.n_train, n_test=1, size=max(192, args.img_size)),
        )
        ours, n = our_pipeline(data / "train", args.img_size, args.batch_size)
        seeds = seeds_pipeline(data / "train", args.img_size, args.batch_size)
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        with strategy.scope():
            size = (args.img_size, args.img_size)
            model = build_model(ModelConfig(args.model, size, weights="none"), 2)
            steps = Steps(strategy, model, keras.optimizers.Adam(1e-3))
        steps = None if args.input_only else steps
        per_epoch = -(-n // args.batch_size)
        for ds in (ours, seeds):  # warm-up: trace the step, fill our cache once
            images_per_second(steps, ds, per_epoch)
        rates: dict[str, list[float]] = {"edgecls (cache, prefetch)": [], "seeds": []}
        for _ in range(args.rounds):
            for name, ds in zip(rates, (ours, seeds), strict=True):
                rates[name].append(images_per_second(steps, ds, per_epoch * args.epochs))
    what = "input pipelines alone" if args.input_only else args.model
    print(f"{what} {args.img_size}px, {n} training images, batch {args.batch_size}")
    print(f"{'pipeline':28s} {'images/s (median)':>18s} {'range':>16s}")
    for name, r in rates.items():
        print(f"{name:28s} {statistics.median(r):18.1f} {min(r):7.1f}-{max(r):<8.1f}")
    ratio = statistics.median(rates["edgecls (cache, prefetch)"]) / statistics.median(
        rates["seeds"]
    )
    print(f"ratio edgecls / seeds: {ratio:.2f}x")


if __name__ == "__main__":
    main()
