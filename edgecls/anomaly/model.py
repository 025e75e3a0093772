"""The scorer: a small fully convolutional network that needs no pretrained weights, its
training losses, and the deployable model with the threshold folded in.

Conv-BN-ReLU stages (32-64-128 channels, three 2x poolings), one more 128 conv, then one 2x
bilinear upsampling with a skip from the stride-4 stage to a logit map at a quarter of the input
size; the image score is the map's maximum. BatchNorm momentum 0.9: with Keras' 0.99 the moving
statistics are still far from the batch statistics after the ~150 steps this trains for, and the
model in inference mode gave a near-constant score (AUROC 0.44 where batch statistics gave 0.94)."""

from __future__ import annotations

import numpy as np

from edgecls.bundle.anomaly import ANOMALY

STAGES = 3  # 2x poolings: the input side must be a multiple of 2**STAGES
MAP_STRIDE = 4  # input pixels per map cell
BN_MOMENTUM = 0.9
CELL_LOSS = 2.0  # weight of the per-cell loss against the image loss
DEFECT_CELL_WEIGHT = 5.0  # a defect's cells against the others: the map learns *where*
SCORE, MAP = "score", "anomaly_map"


def build(size: tuple[int, int], width: int = 32):
    """The training model: uint8-range RGB in, {score (N, 1), anomaly_map (N, h, w, 1)} out."""
    import keras
    from keras import layers

    def conv(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM)(x))

    inputs = keras.Input((*size, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    filters, skips = width, []
    for _ in range(STAGES):
        x = conv(x, filters)
        skips.append((x, filters))
        x = layers.MaxPooling2D()(x)
        filters = min(filters * 2, 128)
    x = conv(x, filters)
    skip, skip_filters = skips[-1]
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = conv(layers.Concatenate()([x, skip]), skip_filters)
    logit_map = layers.Conv2D(1, 1, name=MAP)(x)
    score = layers.GlobalMaxPooling2D(name=SCORE)(logit_map)
    return keras.Model(inputs, {SCORE: score, MAP: logit_map}, name="anomaly_scorer")


def cell_loss(target, logits):
    """Per-cell binary cross-entropy, a defect's cells weighted DEFECT_CELL_WEIGHT."""
    import keras

    loss = keras.ops.binary_crossentropy(target, logits, from_logits=True)
    return keras.ops.mean(loss * (1.0 + (DEFECT_CELL_WEIGHT - 1.0) * target))


def cell_targets(masks: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """A synthetic defect's mask as map cells: a cell is a defect if any of its pixels is."""
    n, h, w = masks.shape
    mh, mw = map_size
    cells = masks.reshape(n, mh, h // mh, mw, w // mw).max(axis=(2, 4))
    return (cells > 0).astype(np.float32)[..., None]


def deployable(model, threshold: float):
    """One output `anomaly` = [score - threshold, map - threshold ...] (bundle/anomaly.py): the
    threshold folded into the map's last layer (a convolution's bias, or the statistics path's
    offset), the map flattened beside the score."""
    import keras
    from keras import layers

    last = model.get_layer(MAP)
    config, weights = last.get_config(), last.get_weights()
    if "offset" in config:  # statistics.WhitenedDistance
        config["offset"] += float(threshold)
    else:
        weights[1] = weights[1] - np.float32(threshold)
    head = type(last).from_config(config)
    logit_map = head(last.input)
    head.set_weights(weights)
    score = layers.GlobalMaxPooling2D()(logit_map)
    out = layers.Concatenate()([score, layers.Flatten()(logit_map)])
    return keras.Model(model.inputs[0], {ANOMALY: out}, name=model.name)


def map_size(model) -> tuple[int, int]:
    shape = model.get_layer(MAP).output.shape
    return int(shape[1]), int(shape[2])
