"""The tf.data input pipeline over a folder split, decoding through the one `load_image`."""

from __future__ import annotations

import numpy as np

from edgecls.folders import Split
from edgecls.runtime.preprocess import load_image


def tf_dataset(
    split: Split,
    size: tuple[int, int],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment=None,
):
    """A tf.data pipeline over a split: decode through `load_image`, cache, shuffle, batch."""
    import tensorflow as tf

    paths = [str(p) for p in split.paths]
    labels = np.asarray(split.labels, np.int32)

    def _load(path: bytes) -> np.ndarray:
        return load_image(path.decode(), size)

    def _map(path, label):
        image = tf.numpy_function(_load, [path], tf.uint8, stateful=False)
        image.set_shape((*size, 3))
        return tf.cast(image, tf.float32), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if shuffle:
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.prefetch(tf.data.AUTOTUNE)
