"""TFLite artifacts through the SavedModel export (the path that works with Keras 3)."""

from __future__ import annotations

from pathlib import Path

from edgecls.bundle.backends import METADATA_KEY
from edgecls.export.context import ExportContext
from edgecls.export.formats import METADATA_WRITERS, QUANTIZERS, Quantizer, register_format
from edgecls.logs import native_stderr_silenced
from edgecls.tf_compat import add_flatbuffer_metadata, calibrate_only, quantize_calibrated


def _converter(ctx: ExportContext):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(ctx.saved_model))


def _write(converter, out: Path) -> None:
    with native_stderr_silenced():  # the MLIR converter's passes
        model = converter.convert()
    out.write_bytes(model)


@register_format("tflite", "float32")
def tflite_float32(ctx: ExportContext, out: Path) -> None:
    _write(_converter(ctx), out)


@register_format("tflite", "float16")
def tflite_float16(ctx: ExportContext, out: Path) -> None:
    import tensorflow as tf

    conv = _converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    _write(conv, out)


@register_format("tflite", "dynamic")
def tflite_dynamic(ctx: ExportContext, out: Path) -> None:
    import tensorflow as tf

    conv = _converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    _write(conv, out)


def calibrate(ctx: ExportContext) -> bytes:
    """Run the calibration images once (what `convert()` does first for full integer), keeping
    the calibrated float model so that quantizing it again, with other layers kept in float,
    costs no second pass over the images (the QuantizationDebugger's own approach)."""
    import tensorflow as tf

    conv = _converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x] for x in ctx.calibration_batches())
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    calibrate_only(conv)
    with native_stderr_silenced():
        return conv.convert()


def int8_flatbuffer(
    ctx: ExportContext, denylisted_nodes: tuple[str, ...] = (), debug: bool = False
) -> bytes:
    """Full integer from the calibrated model; `denylisted_nodes` (output tensor names, as the
    QuantizationDebugger lists them) stay in float. `debug` adds NumericVerify ops for the
    per-layer error. Identical to `TFLiteConverter.convert()` but for the metadata order."""
    import tensorflow as tf

    io = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[ctx.io]
    with native_stderr_silenced():  # "fully_quantize: 0, inference_type: 6, ..."
        return quantize_calibrated(ctx.tflite_calibrated, io, debug, denylisted_nodes)


@register_format("tflite", "int8", needs_calibration=True)
def tflite_int8(ctx: ExportContext, out: Path) -> None:
    """Full integer: int8 weights and activations; uint8 IO by default so camera pixels go
    straight in (the Rescaling inside the model makes the input scale 1, zero point 0)."""
    out.write_bytes(int8_flatbuffer(ctx))


@METADATA_WRITERS.register("tflite")
def embed_metadata(path: Path, data: bytes) -> None:
    """A named metadata buffer in the flatbuffer, as the TFLite Support metadata is stored."""
    add_flatbuffer_metadata(path, METADATA_KEY, data)


def _write_int8(ctx, out: Path, float_nodes=(), method="minmax") -> None:
    out.write_bytes(int8_flatbuffer(ctx, tuple(float_nodes)))


def _layer_errors(ctx, artifact: Path, float_nodes=()):
    from edgecls.export.layer_error import tflite_layer_errors

    return tflite_layer_errors(ctx, tuple(float_nodes))


QUANTIZERS.add("tflite", Quantizer(_write_int8, _layer_errors))
