"""Every private TensorFlow, TFLite converter, LiteRT interpreter and Keras API edgecls uses, in
one place, each with what it does for us and what would break it. Measured with TF 2.21 and
Keras 3.15; a new release that moves one of these fails the export or training tests that use it,
and this is the one file to mend."""

from __future__ import annotations


def calibrate_only(converter) -> None:
    """Make `convert()` stop after calibration and return the calibrated float model, as the
    QuantizationDebugger does. Breaks if TFLiteConverter drops `_experimental_calibrate_only`."""
    converter._experimental_calibrate_only = True


def quantize_calibrated(calibrated: bytes, io_type, debug: bool, denylisted_nodes) -> bytes:
    """Full integer from a calibrated model, optionally with NumericVerify ops (`debug`) and
    some nodes in float; what `TFLiteConverter.convert()` runs after calibration. Breaks if
    `tensorflow.lite.python.convert.mlir_quantize` or `lite._deduplicate_readonly_buffers` is
    renamed or changes its arguments."""
    import tensorflow as tf
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.convert import mlir_quantize

    model = mlir_quantize(
        calibrated,
        input_data_type=tf.float32 if debug else io_type,
        output_data_type=tf.float32 if debug else io_type,
        enable_numeric_verify=debug,
        denylisted_nodes=list(denylisted_nodes) or None,
    )
    return model if debug else lite._deduplicate_readonly_buffers(model)


def add_flatbuffer_metadata(path, name: str, data: bytes) -> None:
    """Append a named metadata buffer to a .tflite file, as TFLite Support stores its metadata.
    Breaks if `tensorflow.lite.python.schema_py_generated` (the flatbuffer object API) or
    `tensorflow.lite.tools.flatbuffer_utils` moves."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    flatbuffer_utils.write_model(model, str(path))


def interpreter_ops(interpreter) -> list[dict]:
    """Every op of a LiteRT interpreter (name, inputs, outputs), as the QuantizationDebugger
    reads them. Breaks if the interpreter drops `_get_ops_details`."""
    return interpreter._get_ops_details()


def interpreter_tensor(interpreter, index: int) -> dict:
    """One tensor's details (name, quantization) of subgraph 0, preserved tensors included.
    Breaks if the interpreter drops `_get_tensor_details(index, subgraph)`."""
    return interpreter._get_tensor_details(index, 0)


def outbound_layers(layer) -> list:
    """The layers that take `layer`'s output, in every model it was called in (the caller keeps
    those of its model). Breaks if Keras drops `Layer._outbound_nodes` or `Node.operation`."""
    return [n.operation for n in layer._outbound_nodes]


def all_layers(model) -> list:
    """Every layer of a model, those inside nested models included. Breaks if Keras drops
    `Layer._flatten_layers(include_self=...)`."""
    return list(model._flatten_layers(include_self=False))


def op_determinism() -> tuple[bool, object]:
    """(whether TF op determinism is on, the function that turns it off): the public API can
    only turn it on. Breaks if `tensorflow.python.framework.config` loses either function."""
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled(), config.disable_op_determinism
