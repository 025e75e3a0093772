"""ONNX artifacts: tf2onnx with an explicit input signature, ONNX Runtime's float16 and static
int8 (QDQ, per-channel weights) quantizers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgecls.bundle.backends import METADATA_KEY
from edgecls.export.context import ONNX_INT8, ExportContext
from edgecls.export.formats import METADATA_WRITERS, QUANTIZERS, Quantizer, register_format

OPSET = 17
INPUT_NAME = "input"


def keras_to_onnx(model, input_size: tuple[int, int], out: Path) -> None:
    """`from_function` with an explicit signature (`from_keras` fails on Keras 3 Sequential)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *input_size, 3), tf.float32, name=INPUT_NAME)]
    fn = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


@register_format("onnx", "float32")
def onnx_float32(ctx: ExportContext, out: Path) -> None:
    shutil.copyfile(ctx.onnx_float, out)


def _topological_sort(graph) -> None:
    """Reorder nodes so every input is produced before use (the float16 converter's input casts
    are appended at the end of the graph, which the checker rejects)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise ValueError("ONNX graph has a cycle or an input nobody produces")
        for n in runnable:
            ordered.append(n)
            ready.update(n.output)
        pending = [n for n in pending if n not in runnable]
    del graph.node[:]
    graph.node.extend(ordered)


@register_format("onnx", "float16")
def onnx_float16(ctx: ExportContext, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(ctx.onnx_float)), keep_io_types=True)
    _topological_sort(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


# Images for the histogram calibrations (percentile, entropy), which cost about ten times min/max
# per image; tens of images already give each tensor millions of values.
HISTOGRAM_IMAGES = 32


class _CalibrationReader(CalibrationDataReader):
    """The same images as the TFLite calibration, through the same preprocessing; one at a time
    for min/max, in batches for the histogram methods (same histograms, fewer Python steps)."""

    def __init__(self, ctx: ExportContext, method: str = "minmax"):
        if method == "minmax":
            self._batches = iter(ctx.calibration_batches())
        else:  # ONNX Runtime's histograms stack the batches: all of one size
            images = ctx.calibration[:HISTOGRAM_IMAGES].astype(np.float32)
            size = max(b for b in range(1, 17) if len(images) % b == 0)
            self._batches = iter(images[i : i + size] for i in range(0, len(images), size))

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


# ONNX Runtime's calibration methods by the names edgecls uses (min/max is the default).
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def write_int8_qdq(
    ctx: ExportContext, out: Path, nodes_to_exclude: tuple[str, ...] = (), method: str = "minmax"
) -> None:
    """Static int8 QDQ with per-channel weights; `nodes_to_exclude` stay in float. The tensor
    ranges of each calibration method are cached in the workdir, so mixed-precision steps do not
    run the calibration images again."""
    import contextlib
    import io

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = ONNX_INT8[ctx.onnx_int8]
    cache = ctx.workdir / f"onnx-ranges-{method}.json"
    with contextlib.redirect_stdout(io.StringIO()):  # percentile/entropy print their progress
        quantize_static(
            str(ctx.onnx_prepared),
            str(out),
            _CalibrationReader(ctx, method),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType[types.activations],
            weight_type=QuantType[types.weights],
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=CalibrationMethod[CALIBRATION_METHODS[method]],
            extra_options=types.extra_options(),
            calibration_cache_path=cache,
        )
    onnx.checker.check_model(str(out))


@register_format("onnx", "int8", needs_calibration=True)
def onnx_int8(ctx: ExportContext, out: Path) -> None:
    write_int8_qdq(ctx, out)


@METADATA_WRITERS.register("onnx")
def embed_metadata(path: Path, data: bytes) -> None:
    """A `metadata_props` entry, which ONNX Runtime shows as custom metadata."""
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = data.decode("utf-8")
            break
    else:
        model.metadata_props.add(key=METADATA_KEY, value=data.decode("utf-8"))
    onnx.save(model, str(path))


def _write_int8(ctx, out: Path, float_nodes=(), method="minmax") -> None:
    write_int8_qdq(ctx, out, tuple(float_nodes), method)


def _layer_errors(ctx, artifact: Path, float_nodes=()):
    from edgecls.export.layer_error import onnx_layer_errors

    return onnx_layer_errors(ctx, artifact)


QUANTIZERS.add("onnx", Quantizer(_write_int8, _layer_errors, tuple(CALIBRATION_METHODS)))
