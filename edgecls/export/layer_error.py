"""Per-layer quantization error of an int8 artifact, on the calibration images.

Each quantized activation tensor is compared with the float value it stands for, computed from
the same (quantized) inputs, so an error is charged to the layer that makes it and not to every
layer after it. TFLite: the NumericVerify ops of the QuantizationDebugger's debug model (float
and quantized op side by side). ONNX: each activation before its QuantizeLinear and after its
DequantizeLinear, as ONNX Runtime's `qdq_loss_debug` pairs them.

The figure is scale-normalised per channel: RMS error of a channel over its standard deviation,
capped at 1 (the channel's signal is gone) and averaged as a mean square over the channels. A
per-tensor RMSE over std, or the debugger's RMSE/scale, hides the classic failure: one channel
with a range 1000 times the others sets the tensor's scale and every other channel rounds to
zero, while the tensor-wide figures stay small.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from edgecls.logs import native_stderr_silenced
from edgecls.tf_compat import interpreter_ops, interpreter_tensor

# Batches of calibration images the error is measured on (the first ERROR_IMAGES of them).
ERROR_IMAGES = 16
BATCH = 16


@dataclass(frozen=True)
class LayerError:
    tensor: str  # TFLite: the debugger's tensor name (a denylist entry); ONNX: the tensor name
    op: str  # the op that produces it
    error: float  # per-channel RMS error / std, in [0, 1]
    rmse_scale: float  # RMSE in quantization steps (about 0.29 is pure rounding)
    float_nodes: tuple[str, ...]  # the nodes to keep in float so this tensor is never quantized
    position: int = 0  # of its producer in the graph's (topological) order


@dataclass
class LayerReport:
    format: str
    layers: list[LayerError]  # worst first
    weighted: dict[str, str] = field(default_factory=dict)  # conv/dense node -> op type
    images: int = 0

    def worst(self, n: int = 10) -> list[LayerError]:
        return self.layers[:n]

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "metric": "per-channel RMS error / std (mean square over channels, capped at 1)",
            "images": self.images,
            "weighted_layers": len(self.weighted),
            "layers": [
                asdict(layer) | {"float_nodes": list(layer.float_nodes)} for layer in self.layers
            ],
        }


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple
    outputs: tuple


class _ChannelStats:
    """Per-channel sums over batches, so the figure is that of all images together."""

    def __init__(self):
        self.n, self.s, self.s2, self.e2, self.scale = 0, 0.0, 0.0, 0.0, 1.0

    def add(self, value: np.ndarray, error: np.ndarray, axis: int, scale: float) -> None:
        axis = axis if value.ndim > 2 else -1
        f = np.moveaxis(value.astype(np.float64), axis, -1).reshape(-1, value.shape[axis])
        e = np.moveaxis(error.astype(np.float64), axis, -1).reshape(f.shape)
        self.n += len(f)
        self.s = self.s + f.sum(0)
        self.s2 = self.s2 + (f**2).sum(0)
        self.e2 = self.e2 + (e**2).sum(0)
        self.scale = float(scale)

    def figures(self) -> tuple[float, float]:
        mean = self.s / self.n
        var = np.maximum(self.s2 / self.n - mean**2, 0.0)
        mse = self.e2 / self.n
        keep = var > 1e-12  # dead channels; a relative cut would hide a 1000x range imbalance
        ratio = np.minimum(mse[keep] / var[keep], 1.0) if keep.any() else np.zeros(1)
        rmse = float(np.sqrt(mse.mean()))
        return float(np.sqrt(ratio.mean())), rmse / self.scale if self.scale else 0.0


def float_closure(
    nodes: list[Node], tensor: str, passthrough: set[str], activations: set[str]
) -> tuple[str, ...]:
    """Nodes to keep in float so that `tensor` is never quantized: its producer (through
    activations that the quantizer fuses into it), and every consumer reached through ops that
    keep their input's scale (pooling, reshapes), up to and including the next compute layer."""
    producer = {t: n for n in nodes for t in n.outputs}
    consumers: dict = {}
    for n in nodes:
        for t in n.inputs:
            consumers.setdefault(t, []).append(n)
    picked: dict[str, None] = {}
    node = producer.get(tensor)
    while node is not None:
        picked[node.name] = None
        node = producer.get(node.inputs[0]) if node.op in activations and node.inputs else None
    queue = deque([tensor])
    while queue:
        for c in consumers.get(queue.popleft(), []):
            if c.name not in picked:
                picked[c.name] = None
                if c.op in passthrough | activations:
                    queue.extend(c.outputs)
    return tuple(picked)


def ranked(report: LayerReport) -> LayerReport:
    report.layers.sort(key=lambda layer: -layer.error)
    return report


def error_batches(ctx, images: int = ERROR_IMAGES):
    """Float32 batches of the first calibration images, pixels in [0, 255]."""
    chosen = ctx.calibration[:images].astype(np.float32)
    return [chosen[i : i + BATCH] for i in range(0, len(chosen), BATCH)]


# ---------------------------------------------------------------------------------------------
# TFLite

TFLITE_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
TFLITE_PASSTHROUGH = {"MAX_POOL_2D", "RESHAPE", "SQUEEZE", "TRANSPOSE", "PAD"}
TFLITE_ACTIVATIONS = {"RELU", "RELU6", "RELU_N1_TO_1"}


def _denylist_name(tensor_name: str) -> str:
    """The name the QuantizationDebugger gives a verified tensor (its CSV `tensor_name`), which
    is what `denylisted_nodes` matches: the debug model's name less one trailing digit."""
    return tensor_name[:-1] if tensor_name[-1:].isdigit() else tensor_name


def tflite_layer_errors(ctx, denylisted_nodes: tuple[str, ...] = ()) -> LayerReport:
    """Per-layer error of the int8 TFLite model from the NumericVerify ops of its debug model,
    run with every tensor preserved (the debugger's `layer_direct_compare_metrics` path)."""
    from edgecls.bundle.backends import litert_runtime
    from edgecls.export.tflite import int8_flatbuffer

    interpreter_cls = litert_runtime()[0]
    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": it is
        warnings.simplefilter("ignore", UserWarning)
        it = interpreter_cls(
            model_content=int8_flatbuffer(ctx, denylisted_nodes, debug=True),
            experimental_preserve_all_tensors=True,
        )
    ops = interpreter_ops(it)
    verified = {o["inputs"][0]: o["inputs"][1] for o in ops if o["op_name"] == "NumericVerify"}
    details = {q: interpreter_tensor(it, q) for q in verified}
    names = {q: _denylist_name(d["name"]) for q, d in details.items()}
    nodes = [
        Node(names[o["outputs"][0]], o["op_name"], tuple(o["inputs"]), (o["outputs"][0],))
        for o in ops
        if o["outputs"] and o["outputs"][0] in verified
    ]
    stats = {q: _ChannelStats() for q in verified}
    inp = it.get_input_details()[0]
    batches = error_batches(ctx)
    for batch in batches:
        it.resize_tensor_input(inp["index"], batch.shape)
        with native_stderr_silenced():  # XNNPACK's "Created delegate" on the first allocation
            it.allocate_tensors()
        it.set_tensor(inp["index"], batch)
        it.invoke()
        for q, f in verified.items():
            params = details[q]["quantization_parameters"]
            scale, zero = float(params["scales"][0]), int(params["zero_points"][0])
            value = it.get_tensor(f)
            error = (it.get_tensor(q).astype(np.float64) - zero) * scale - value
            stats[q].add(value, error, -1, scale)
    op_of = {n.outputs[0]: n.op for n in nodes}
    layers = [
        LayerError(
            names[q],
            op_of.get(q, "?"),
            *stats[q].figures(),
            float_closure(nodes, q, TFLITE_PASSTHROUGH, TFLITE_ACTIVATIONS),
            position,
        )
        for position, q in enumerate(n.outputs[0] for n in nodes)
    ]
    weighted = {n.name: n.op for n in nodes if n.op in TFLITE_WEIGHTED}
    return ranked(LayerReport("tflite", layers, weighted, sum(map(len, batches))))


# ---------------------------------------------------------------------------------------------
# ONNX

ONNX_WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
ONNX_PASSTHROUGH = {"MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Pad"}
ONNX_ACTIVATIONS = {"Relu", "Clip"}


def _qdq_pairs(model) -> dict[str, tuple[str, str, str]]:
    """Activation tensor -> (its DequantizeLinear output, scale and zero point initializers)."""
    initializers = {t.name for t in model.graph.initializer}
    dq_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.input[0]: (dq_of[n.output[0]], n.input[1], n.input[2])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in initializers and n.output[0] in dq_of
    }


def _float_name(tensor: str) -> str:
    """The float model's name of a QDQ model's tensor (graph outputs are renamed)."""
    return tensor.removesuffix("_QuantizeLinear_Input")


def _fused(value: np.ndarray, scale: float, zero: np.ndarray) -> np.ndarray:
    """What the float model computes where the quantizer dropped a Relu or Clip and lets the
    QuantizeLinear clamp instead: the value clipped to the quantized range."""
    info = np.iinfo(zero.dtype)
    return np.clip(value, (info.min - int(zero)) * scale, (info.max - int(zero)) * scale)


def onnx_layer_errors(ctx, qdq_path) -> LayerReport:
    """Per-layer error of a QDQ model: every activation before quantization and after
    dequantization, read as extra graph outputs (graph optimizations off, so no QDQ pair is
    fused away)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(qdq_path))
    pairs = _qdq_pairs(model)
    scales = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    wanted = list(dict.fromkeys(t for p in pairs.items() for t in (p[0], p[1][0])))
    known = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in known:
            model.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    stats = {t: _ChannelStats() for t in pairs}
    float_graph = onnx.load(str(ctx.onnx_prepared)).graph
    nodes = [Node(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in float_graph.node]
    op_of = {t: n.op for n in nodes for t in n.outputs}
    position = {t: i for i, n in enumerate(nodes) for t in n.outputs}
    qdq_producers = {t: n.op_type for n in model.graph.node for t in n.output}
    fused = {t for t in pairs if op_of.get(_float_name(t)) != qdq_producers.get(t, "input")}
    batches = error_batches(ctx)
    for batch in batches:
        outputs = session.run(wanted, {session.get_inputs()[0].name: batch})
        values = dict(zip(wanted, outputs, strict=True))
        for t, (dq, scale_name, zero_name) in pairs.items():
            scale = float(scales[scale_name].ravel()[0])
            value = values[t]
            if t in fused:
                value = _fused(value, scale, scales[zero_name].ravel()[0])
            stats[t].add(value, values[dq] - value, 1, scale)
    layers = [
        LayerError(
            _float_name(t),
            op_of.get(_float_name(t), "input"),
            *stats[t].figures(),
            float_closure(nodes, _float_name(t), ONNX_PASSTHROUGH, ONNX_ACTIVATIONS),
            position.get(_float_name(t), -1),
        )
        for t in pairs
    ]
    weighted = {n.name: n.op for n in nodes if n.op in ONNX_WEIGHTED}
    return ranked(LayerReport("onnx", layers, weighted, sum(map(len, batches))))
