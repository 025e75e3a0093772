"""Repairs applied to the float Keras model before quantizing it.

Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and
Bias Correction", ICCV 2019): for two consecutive layers through ReLU (and max pooling, which
commute with a positive per-channel scale), scale output channel i of the first by 1/s_i and the
matching input channel of the second by s_i, with s_i = sqrt(r1_i * r2_i) / r2_i (r: the
channel's weight range), so both channels end with the range sqrt(r1_i * r2_i). The float
function is unchanged; per-tensor activation ranges and per-channel weights become balanced.
ReLU6 is left alone: its clip at 6 does not commute with a scale.

Bias correction: per-channel int8 weights shift each output on average by dW * E[x]; that shift
is measured on the calibration images and subtracted from the bias. It changes the float model
(by the expected rounding of its weights) and is kept only when parity improves.
"""

from __future__ import annotations

import numpy as np

from edgecls.tf_compat import all_layers, outbound_layers

EQUALIZE_SWEEPS = 4


def _consumers(model, layer) -> list:
    """Layers of `model` that take `layer`'s output (Keras keeps stale nodes of other models)."""
    inside = {id(x) for x in model.layers}
    return [x for x in outbound_layers(layer) if id(x) in inside]


def _is_relu_like(layer) -> bool:
    """Commutes with a positive per-channel scale: relu/linear activations, max pooling,
    dropout (identity at inference)."""
    import keras

    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        return (
            not cfg.get("max_value") and not cfg.get("negative_slope") and not cfg.get("threshold")
        )
    if isinstance(layer, keras.layers.Activation):
        return layer.get_config()["activation"] in ("relu", "linear")
    return isinstance(layer, keras.layers.MaxPooling2D | keras.layers.Dropout)


def _first_layer_ok(layer) -> bool:
    import keras

    cfg = layer.get_config()
    conv = isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, keras.layers.DepthwiseConv2D | keras.layers.Conv2DTranspose
    )
    kind_ok = (conv and cfg.get("groups", 1) == 1) or isinstance(layer, keras.layers.Dense)
    return kind_ok and cfg["activation"] in ("relu", "linear")


def equalizable_pairs(model) -> list[tuple[object, object]]:
    """(first, second): Conv2D/Dense pairs joined by a single path of
    ReLU-like layers (and at most one Flatten, channels last, into a Dense)."""
    import keras

    pairs = []
    for first in model.layers:
        if not _first_layer_ok(first):
            continue
        nxt, flatten = _consumers(model, first), False
        while len(nxt) == 1 and (_is_relu_like(nxt[0]) or isinstance(nxt[0], keras.layers.Flatten)):
            flatten = flatten or isinstance(nxt[0], keras.layers.Flatten)
            nxt = _consumers(model, nxt[0])
        if len(nxt) != 1:
            continue
        second = nxt[0]
        if isinstance(second, keras.layers.Dense) or (
            not flatten
            and isinstance(second, keras.layers.Conv2D)
            and not isinstance(second, keras.layers.DepthwiseConv2D | keras.layers.Conv2DTranspose)
            and second.get_config().get("groups", 1) == 1
        ):
            pairs.append((first, second))
    return pairs


def _input_channels(kernel: np.ndarray, channels: int) -> np.ndarray:
    """The second layer's kernel as (rows per input channel, channels, outputs)."""
    # Conv2D (kh, kw, in, out); Dense after a Flatten of (h, w, c), whose row r is channel r % c;
    # plain Dense (in, out): all three are the same reshape.
    return kernel.reshape(-1, channels, kernel.shape[-1])


def _scale_pair(first, second) -> float:
    """Equalize one pair in place; returns the largest change of scale (1.0: already equal)."""
    w1, *b1 = first.get_weights()
    w2, *rest = second.get_weights()
    channels = w1.shape[-1]
    grouped = _input_channels(w2, channels)
    r1 = np.abs(w1.reshape(-1, channels)).max(0)
    r2 = np.abs(grouped).max(axis=(0, 2))
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones(channels, w1.dtype)
    s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
    w1 = w1 / s
    b1 = [b / s for b in b1]
    w2 = (grouped * s[None, :, None]).reshape(w2.shape)
    first.set_weights([w1, *b1])
    second.set_weights([w2.astype(w1.dtype), *rest])
    return float(np.max(np.maximum(s, 1 / s)))


def copy_model(model):
    import keras

    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    return new


def equalize(model, sweeps: int = EQUALIZE_SWEEPS) -> tuple[object, list[tuple[str, str]]]:
    """A function-preserving copy of `model` with cross-layer equalized weights, and the
    (first, second) layer names it changed; no pairs: ([], the model itself)."""
    new = copy_model(model)
    pairs = equalizable_pairs(new)
    if not pairs:
        return model, []
    for _ in range(sweeps):
        if max(_scale_pair(*p) for p in pairs) < 1.01:
            break
    return new, [(a.name, b.name) for a, b in pairs]


def _weight_shift(kernel: np.ndarray) -> np.ndarray:
    """What symmetric per-output-channel int8 rounding does to a kernel (TFLite and ONNX
    Runtime both quantize weights per output channel)."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    scale = np.abs(flat).max(0) / 127.0
    scale[scale == 0] = 1.0
    return (np.round(flat / scale) * scale - flat).reshape(kernel.shape)


def _bias_layers(model) -> tuple[list[str], int]:
    """Names of the top-level Conv2D/Dense layers with a bias to correct, and how many conv/dense
    layers the model has, depthwise and those inside a nested backbone included."""
    import keras

    kinds = keras.layers.Conv2D | keras.layers.Dense
    weighted = [x for x in all_layers(model) if isinstance(x, kinds)]
    names = [
        x.name
        for x in model.layers
        if isinstance(x, kinds)
        and not isinstance(x, keras.layers.DepthwiseConv2D | keras.layers.Conv2DTranspose)
        and getattr(x, "use_bias", False)
        and x.get_config().get("groups", 1) == 1
    ]
    return names, len(weighted)


def correct_bias(model, images: np.ndarray) -> tuple[object, list[str]]:
    """A copy of `model` whose Conv2D/Dense biases absorb the mean output shift of int8 weights,
    dW * E[x], E[x] measured per input channel on `images` (uint8, through the float model).
    Nothing when fewer than half the conv/dense layers have a bias (MobileNets: batch norm
    carries it): correcting the head alone is not worth a conversion."""
    import keras

    names, total = _bias_layers(model)
    if not names or 2 * len(names) < total:
        return model, []
    new = copy_model(model)
    targets = [new.get_layer(name) for name in names]
    probe = keras.Model(new.inputs, [layer.input for layer in targets])
    inputs = probe.predict(images.astype(np.float32), batch_size=16, verbose=0)
    inputs = inputs if isinstance(inputs, list) else [inputs]
    for layer, x in zip(targets, inputs, strict=True):
        mean = x.reshape(-1, x.shape[-1]).mean(0)
        kernel, bias = layer.get_weights()
        shift = _weight_shift(kernel).reshape(-1, kernel.shape[-2], kernel.shape[-1])
        layer.set_weights([kernel, bias - np.einsum("rio,i->o", shift, mean).astype(bias.dtype)])
    return new, [layer.name for layer in targets]
