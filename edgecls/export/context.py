"""What every converter needs, computed once: the deployable Keras model, its SavedModel, the
float ONNX model, and the calibration images."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import LOGITS
from edgecls.durable import new_scratch


def logits_model(model):
    """The model with its final softmax split off and its output named `logits`, or the model
    itself when it does not end in a softmax.

    TFLite's int8 softmax runs different code on ARM (a uint16 lookup table) and on x86, so an
    int8 model that ends in one is not bit-exact across the two (measured: 1 value in 450 one
    step apart under XNNPACK, whose int8 convolutions and matmuls were all bit-exact). Logits are
    also finer than uint8 probabilities (1/256 steps). The runtime applies the softmax in float64.
    """
    import keras

    last = model.layers[-1]
    config = last.get_config()
    if isinstance(last, keras.layers.Dense) and config.get("activation") == "softmax":
        head = keras.layers.Dense.from_config({**config, "activation": None, "name": LOGITS})
        logits = head(last.input)
        head.set_weights(last.get_weights())
    elif isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and config.get("activation") == "softmax"
    ):
        logits = last.input
    else:
        return model
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, {LOGITS: logits}, name=model.name)


@dataclass(frozen=True)
class OnnxInt8:
    """Int8 ONNX QDQ types (ONNX Runtime `QuantType` names) for activations and weights."""

    activations: str
    weights: str
    symmetric: bool = False  # ActivationSymmetric and WeightSymmetric: zero points all 0

    def extra_options(self) -> dict:
        return {"ActivationSymmetric": True, "WeightSymmetric": True} if self.symmetric else {}


# u8s8 is ONNX Runtime's default, but its x86 kernels without VNNI (pmaddubsw) saturate, so the
# export machine computes another model than an ARM board does. Measured on two sample models, on
# x86 and emulated Pi 4/5: u8s8 up to 0.21 apart in probability (x86 agreement with the float
# model 0.95, ARM 1.0); u8u8 bit-exact on all three and the closest to the float model;
# reduce_range (7-bit weights) bit-exact too but less accurate. s8s8 (symmetric int8 for both) is
# the QDQ form TensorRT consumes: the int8 ONNX for a Jetson.
ONNX_INT8 = {
    "u8u8": OnnxInt8("QUInt8", "QUInt8"),
    "u8s8": OnnxInt8("QUInt8", "QInt8"),
    "s8s8": OnnxInt8("QInt8", "QInt8", symmetric=True),
}


@dataclass
class ExportContext:
    model: object  # keras.Model, as `logits_model` makes it
    input_size: tuple[int, int]
    calibration: np.ndarray  # uint8 (N, H, W, 3), through the training preprocessing
    io: str = "uint8"  # integer TFLite input/output type: uint8 | int8 | float32
    onnx_int8: str = "u8u8"  # int8 ONNX activation/weight types, see ONNX_INT8
    # `edgecls-export-PID-*`: one a killed export left is removed by the next (durable.py)
    workdir: Path = field(default_factory=lambda: new_scratch("export"))
    variants: dict = field(default_factory=dict, repr=False)  # see `variant`

    @functools.cached_property
    def saved_model(self) -> Path:
        path = self.workdir / "saved_model"
        self.model.export(str(path), format="tf_saved_model", verbose=False)
        return path

    @functools.cached_property
    def onnx_float(self) -> Path:
        from edgecls.export.onnx import keras_to_onnx

        path = self.workdir / "float32.onnx"
        keras_to_onnx(self.model, self.input_size, path)
        return path

    @functools.cached_property
    def tflite_calibrated(self) -> bytes:
        """The float TFLite model with its calibration statistics, measured once: plain int8,
        the per-layer error and every mixed-precision step quantize from it (cheap), instead of
        running the calibration images again for each."""
        from edgecls.export.tflite import calibrate

        return calibrate(self)

    @functools.cached_property
    def onnx_prepared(self) -> Path:
        """The float ONNX model after ONNX Runtime's quantization pre-processing."""
        from onnxruntime.quantization.shape_inference import quant_pre_process

        path = self.workdir / "float32.prepared.onnx"
        quant_pre_process(str(self.onnx_float), str(path), skip_symbolic_shape=True)
        return path

    def variant(self, name: str, make) -> tuple[ExportContext | None, list]:
        """A repaired float model, `make() -> (model, what changed)` (equalized layer pairs,
        bias-corrected layers), as its own export: SavedModel, ONNX and calibration in a
        sub-folder of this workdir. Made once and shared by the formats; (None, []) when the
        repair found nothing to change."""
        if name not in self.variants:
            model, changed = make()
            workdir = self.workdir / name
            workdir.mkdir(parents=True, exist_ok=True)
            ctx = ExportContext(
                model, self.input_size, self.calibration, self.io, self.onnx_int8, workdir
            )
            self.variants[name] = (ctx if changed else None, changed)
        return self.variants[name]

    def calibration_batches(self):
        """Float32 batches of one image, pixels in [0, 255]: the model's own input contract."""
        for image in self.calibration:
            yield image[None].astype(np.float32)
