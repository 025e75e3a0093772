"""The tf.data input pipeline over a folder split, decoding through the one `load_image`.

Decoded images are cached in memory only while they fit a budget; past it they go to a cache
file (in the run's staging folder, gone with it) or are streamed: parallel decode and prefetch.
So a folder far larger than memory trains in bounded RAM."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgecls.bundle.preprocess import load_image
from edgecls.errors import EdgeclsError
from edgecls.folders import Split

CACHE_MODES = ("auto", "memory", "disk", "none")


@dataclass(frozen=True)
class CachePolicy:
    """auto: memory while the decoded split fits `memory_mb`, else a disk cache file (or
    streaming where there is no folder for one); memory, disk, none: forced."""

    mode: str = "auto"
    memory_mb: int = 1024
    folder: Path | None = None  # where disk cache files may go

    def __post_init__(self):
        if self.mode not in CACHE_MODES:
            raise EdgeclsError(f"--cache {self.mode!r}: choose one of {', '.join(CACHE_MODES)}")
        if self.memory_mb < 0:
            raise EdgeclsError("--cache-mb must be 0 or more")

    def choose(self, n_images: int, size: tuple[int, int]) -> str:
        if self.mode != "auto":
            return "none" if self.mode == "disk" and self.folder is None else self.mode
        if decoded_mb(n_images, size) <= self.memory_mb:
            return "memory"
        return "disk" if self.folder is not None else "none"

    def held_mb(self, n_images: int, size: tuple[int, int], shuffle: bool) -> float:
        """What a dataset under this policy keeps in memory: all of it, or a shuffle buffer."""
        mode = self.choose(n_images, size)
        if mode == "memory":
            return decoded_mb(n_images, size)
        return decoded_mb(_buffer(n_images, size, self, mode), size) if shuffle else 0.0

    def after(self, used_mb: float) -> CachePolicy:
        """The same policy with what another dataset holds taken off the budget."""
        return replace(self, memory_mb=max(0, int(self.memory_mb - used_mb)))


def decoded_mb(n_images: int, size: tuple[int, int]) -> float:
    return n_images * size[0] * size[1] * 3 / 2**20


@dataclass(frozen=True)
class Shard:
    """This input pipeline's share of the data (tf.distribute's InputContext, plain)."""

    count: int = 1
    index: int = 0


def tf_dataset(
    split: Split,
    size: tuple[int, int],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment=None,
    cache: CachePolicy = CachePolicy(),
    shard: Shard = Shard(),
    repeat: bool = False,
    name: str = "split",
):
    """Decode through `load_image`, cache within bounds, shuffle, batch, augment, prefetch.

    Evaluation order (no shuffle) is the split's order. Sharding happens on the file list, before
    decoding, so each worker decodes only its share."""
    import tensorflow as tf

    order = np.arange(len(split))
    mode = cache.choose(-(-len(split) // shard.count), size)
    if shuffle and mode == "disk":  # a cache file replays one order: fix a random one first
        order = np.random.default_rng(seed).permutation(len(split))
    paths = np.asarray([str(split.paths[i]) for i in order])
    labels = np.asarray(split.labels, np.int32)[order]
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shard.count > 1:
        ds = ds.shard(shard.count, shard.index)
    if shuffle and mode == "none":  # streaming: reshuffling file names costs nothing
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_decoder(size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if mode == "memory":
        ds = ds.cache()
    elif mode == "disk":
        ds = ds.cache(str(cache.folder / f"{name}-{shard.index}"))
    if shuffle and mode != "none":
        ds = ds.shuffle(_buffer(len(paths), size, cache, mode), seed=seed)
    ds = ds.batch(batch_size)

    def _finish(x, y):  # cached as uint8 (a quarter of float32), batches leave as float32
        x = tf.cast(x, tf.float32)
        return (augment(x, training=True) if augment is not None else x), y

    ds = ds.map(_finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def _decoder(size: tuple[int, int]):
    import tensorflow as tf

    def _load(path: bytes) -> np.ndarray:
        return load_image(path.decode(), size)

    def _map(path, label):
        image = tf.numpy_function(_load, [path], tf.uint8, stateful=False)
        image.set_shape((*size, 3))
        return image, label

    return _map


def _buffer(n: int, size: tuple[int, int], cache: CachePolicy, mode: str) -> int:
    """All of a memory cache (the buffer shares its tensors); a disk cache, what half the budget
    holds (the other half stays for validation), at least a few batches' worth."""
    if mode == "memory":
        return max(1, n)
    per_image_mb = decoded_mb(1, size)
    return int(max(256, min(n, cache.memory_mb / 2 / per_image_mb)))
