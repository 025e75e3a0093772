"""The pretrained path (`--weights imagenet` or a backbone file): PaDiM-style statistics of a
frozen MobileNetV2's features over the good images, no training of the network.

Features of two stages (stride 4 and 8, the second upsampled) are concatenated at every
location; a fixed random choice of DIMS channels is kept (as PaDiM does); each location gets
its mean over the good images, and one covariance pooled over every location whitens them. The
map is the mean absolute whitened deviation from the location's mean: PaDiM's per-location
covariance would be h * w * DIMS^2 numbers (23 MB at 96 px) and its Mahalanobis distance no
int8 kernel, where this is one 1x1 convolution and one small layer (`WhitenedDistance`)."""

from __future__ import annotations

import numpy as np

STAGES = ("block_3_expand_relu", "block_6_expand_relu")  # strides 4 and 8
DIMS = 100
RIDGE = 0.01  # added to the covariance's diagonal, relative to its mean variance


def _register():
    import keras

    @keras.saving.register_keras_serializable(package="edgecls")
    class WhitenedDistance(keras.layers.Layer):
        """mean |x - center(location)| over channels, minus `offset` (the folded threshold)."""

        def __init__(self, shape=(1, 1, 1), offset=0.0, **kwargs):
            super().__init__(**kwargs)
            self.shape, self.offset = tuple(shape), float(offset)

        def build(self, input_shape):
            self.center = self.add_weight(shape=self.shape, initializer="zeros", trainable=False)

        def call(self, x):
            d = keras.ops.mean(keras.ops.abs(x - self.center), axis=-1, keepdims=True)
            return d - self.offset

        def get_config(self):
            return super().get_config() | {"shape": list(self.shape), "offset": self.offset}

    return WhitenedDistance


_LAYER = None


def distance_layer():
    """The custom layer, registered with Keras once (export and explain load it by name)."""
    global _LAYER
    if _LAYER is None:
        _LAYER = _register()
    return _LAYER


def feature_model(backbone_config):
    """Raw [0, 255] pixels in, the two stages' features (stride 4) out; the backbone frozen."""
    import keras
    from keras import layers

    from edgecls.train.models import make_backbone

    backbone = make_backbone(backbone_config)
    backbone.trainable = False
    inputs = keras.Input((*backbone_config.img_size, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)  # MobileNetV2 wants [-1, 1]
    taps = keras.Model(backbone.inputs, [backbone.get_layer(n).output for n in STAGES])
    fine, coarse = taps(x, training=False)
    coarse = layers.UpSampling2D(2, interpolation="bilinear")(coarse)
    return keras.Model(inputs, layers.Concatenate()([fine, coarse]), name="features")


def fit_statistics(chunks, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (C, DIMS): channel choice x whitening, center (h, w, DIMS)) from the good
    images' features, chunk by chunk (each (n, h, w, C)): one pass, memory of one chunk."""
    pick = total = outer = None
    n = 0
    for features in chunks:
        if pick is None:
            c = features.shape[-1]
            pick = np.sort(np.random.default_rng(seed).choice(c, size=min(DIMS, c), replace=False))
        f = features[..., pick].astype(np.float64)
        total = f.sum(axis=0) if total is None else total + f.sum(axis=0)
        flat = f.reshape(-1, len(pick))
        outer = flat.T @ flat if outer is None else outer + flat.T @ flat
        n += len(f)
    mean = total / n  # (h, w, DIMS)
    locations = mean.reshape(-1, len(pick))
    cov = (outer - n * locations.T @ locations) / max(1, n * len(locations) - 1)
    cov += RIDGE * np.trace(cov) / len(pick) * np.eye(len(pick))
    whiten = np.linalg.cholesky(np.linalg.inv(cov))  # W W^T = cov^-1: x @ W is white
    select = np.zeros((c, len(pick)))  # c: the channels, read from the first chunk
    select[pick, np.arange(len(pick))] = 1.0
    return (select @ whiten).astype(np.float32), (mean @ whiten).astype(np.float32)


def scorer(features_model, kernel: np.ndarray, center: np.ndarray, offset: float = 0.0):
    """{score, anomaly_map} as the trained path's model (model.py), from fitted statistics."""
    import keras
    from keras import layers

    from edgecls.anomaly.model import MAP, SCORE

    whiten = layers.Conv2D(kernel.shape[1], 1, use_bias=False)
    x = whiten(features_model.output)
    whiten.set_weights([kernel[None, None]])
    distance = distance_layer()(center.shape, offset, name=MAP)
    logit_map = distance(x)
    distance.set_weights([center])
    score = layers.GlobalMaxPooling2D(name=SCORE)(logit_map)
    return keras.Model(features_model.inputs[0], {SCORE: score, MAP: logit_map}, name="padim")
