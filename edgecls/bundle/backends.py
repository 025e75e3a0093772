"""One `Predictor` interface for every artifact format, looked up by name or file suffix.

`predict(batch_uint8) -> probabilities`: the batch is RGB uint8 (N, H, W, 3) at the model's size,
exactly what `preprocess.resize` makes. Each predictor turns it into its artifact's dtype (float32,
or integers with the artifact's scale and zero point), dequantizes what comes out and, for
artifacts whose output is named `logits` (all that `edgecls export` writes), applies the softmax
(an `anomaly` output: bundle/anomaly.py), so metrics, parity, benchmark and the camera loop
never special-case a format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgecls.bundle.anomaly import ANOMALY
from edgecls.bundle.anomaly import probabilities as anomaly_probabilities
from edgecls.bundle.cpu import this_cpu
from edgecls.bundle.delegates import choose_delegate, validate_delegate
from edgecls.bundle.formats import format_of
from edgecls.bundle.tflite_metadata import read_metadata
from edgecls.errors import EdgeclsError
from edgecls.logs import native_stderr_silenced
from edgecls.registry import Registry


class Predictor(Protocol):
    path: Path
    input_size: tuple[int, int]
    description: str  # what actually runs: runtime, delegate or providers, threads
    warnings: list[str]
    metadata: dict | None  # what the artifact says about itself (labels, input spec)

    def predict(self, batch: np.ndarray) -> np.ndarray: ...

    def outputs(self, batch: np.ndarray) -> np.ndarray: ...  # raw, before `HEADS`


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run an artifact on this machine."""

    threads: int | None = None  # None: all cores
    delegate: str = "auto"  # LiteRT: auto|none|xnnpack|gpu|nnapi|edgetpu|PATH.so
    providers: tuple[str, ...] | None = None  # ONNX Runtime: None = best available
    strict: bool = False  # a delegate/provider that cannot load is an error, not a fallback
    trt_cache: Path | None = None  # TensorRT engine cache folder
    fp16: bool = False  # TensorRT fp16 kernels
    # False: ONNX Runtime leaves QDQ int8 unfused (dequantize, float op, quantize), the
    # arithmetic every CPU agrees on up to float rounding, to tell a CPU's kernels from the model
    fused_int8: bool = True

    def __post_init__(self):
        """Checked where the options are made, so every command that takes them checks alike."""
        validate_delegate(self.delegate)
        if self.threads is not None and self.threads < 1:
            raise EdgeclsError("--threads must be at least 1")

    @property
    def num_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class Backend:
    name: str
    loader: Callable[..., Predictor]


# The format each backend runs is in the format table (bundle/formats.py).
BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(name: str):
    return BACKENDS.register(name, lambda cls: Backend(name, cls))


def backend_for(path: Path) -> Backend:
    return BACKENDS.get(format_of(path).backend)


def load_predictor(path: str | Path, options: RuntimeOptions = RuntimeOptions()) -> Predictor:
    path = Path(path)
    if not path.is_file():
        raise EdgeclsError(f"{path}: model file not found")
    return backend_for(path).loader(path, options)


def quantize(batch: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """uint8 pixels to the artifact's input dtype; scale 1 / zero point 0 uint8 passes through."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return batch.astype(dtype)
    if scale == 0:
        return batch.astype(dtype)
    if dtype == np.uint8 and scale == 1.0 and zero_point == 0:
        return np.ascontiguousarray(batch, dtype=np.uint8)
    info = np.iinfo(dtype)
    q = np.round(batch.astype(np.float32) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if values.dtype.kind == "f" or scale == 0:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


LOGITS = "logits"  # an output of this name gets the softmax here (see export.context)
METADATA_KEY = "edgecls"  # the artifact's own metadata entry (see export.metadata)


def _metadata(raw: bytes | str | None, path: Path) -> dict | None:
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgeclsError(f"{path}: its edgecls metadata is not valid JSON; re-export") from None
    return meta if isinstance(meta, dict) else None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Float64, max-subtracted: the same bits on ARM and x86 for the same logits (measured)."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


PROBABILITIES = "probabilities"
# What a model's output holds, by its name, and how it becomes class probabilities: logits get the
# softmax, an anomaly output its sigmoid at the folded threshold, anything else is taken as is.
HEADS = {LOGITS: softmax, ANOMALY: anomaly_probabilities, PROBABILITIES: lambda out: out}


def values_of(names) -> str:
    """The HEADS entry for an artifact's output names."""
    return next((n for n in (LOGITS, ANOMALY) if n in names), PROBABILITIES)


def _batch(outputs: list[np.ndarray]) -> np.ndarray:
    """One float32 batch from per-chunk outputs."""
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(outputs).astype(np.float32)


class _Heads:
    """`predict` is `outputs` through the head its output's name calls for; `outputs` (the raw,
    dequantized values) is what an anomaly map is read from."""

    values: str = PROBABILITIES

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return HEADS[self.values](self.outputs(batch))


def _io(dtype, scale: float, zero_point: int, values: str | None = None) -> dict:
    """How to feed/read a tensor: dtype, scale/zero point for integer tensors, and for outputs
    what their values are (`HEADS`)."""
    d = {"dtype": np.dtype(dtype).name}
    if np.dtype(dtype).kind in "iu" and scale:
        d.update(scale=float(scale), zero_point=int(zero_point))
    if values is not None:
        d["values"] = values
    return d


# ---------------------------------------------------------------------------------------------
# LiteRT


class RuntimeUnavailable(EdgeclsError):
    """A runtime that is not installed here, or whose import fails (a wheel built for another
    numpy, a missing native library): under `--backend auto` its artifacts are skipped while
    another runtime can serve them; asked for by name, it is this one-line error."""

    def __init__(self, runtime: str, problem: str, fix: str):
        super().__init__(f"{runtime} {problem}: {fix}")
        self.runtime, self.problem, self.fix = runtime, problem, fix


def import_runtime(module: str):
    """(module, None), or (None, why) in `edgecls doctor`'s words: "not installed", or "broken:
    Type: reason" for an import that fails in any other way (a wheel built for another numpy, a
    missing CUDA library)."""
    import importlib

    try:
        return importlib.import_module(module), None
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None, "not installed"
        return None, broken(exc)
    except Exception as exc:  # any failure of a third-party import is a finding, not a crash
        return None, broken(exc)


def broken(exc: BaseException) -> str:
    reason = " ".join(str(exc).split())[:200]
    return f"broken: {type(exc).__name__}: {reason}"


def _unavailable(runtime: str, why: str, package: str) -> RuntimeUnavailable:
    if why == "not installed":
        return RuntimeUnavailable(runtime, "is not installed", f"pip install {package}")
    fix = f"pip install --force-reinstall {package}; `edgecls doctor` shows what fails"
    return RuntimeUnavailable(runtime, f"is broken here ({why.removeprefix('broken: ')})", fix)


def litert_runtime():
    """(Interpreter, load_delegate, OpResolverType or None, source): LiteRT, or tflite-runtime
    where numpy < 2 (its last release fails to load with numpy 2)."""
    mod, problem = import_runtime("ai_edge_litert.interpreter")
    if mod is not None:
        return mod.Interpreter, mod.load_delegate, mod.OpResolverType, "ai_edge_litert"
    if int(np.__version__.split(".")[0]) < 2:  # tflite-runtime 2.14 fails to load with numpy 2
        old, _ = import_runtime("tflite_runtime.interpreter")
        if old is not None:
            resolver = getattr(old, "OpResolverType", None)
            return old.Interpreter, old.load_delegate, resolver, "tflite_runtime"
    # tf.lite is deprecated and would pull TensorFlow onto the board side: never used here.
    raise _unavailable("LiteRT (ai-edge-litert)", problem, "ai-edge-litert")


def onnx_runtime():
    """The onnxruntime module, or RuntimeUnavailable saying why and what to do."""
    ort, problem = import_runtime("onnxruntime")
    if ort is not None:
        return ort
    raise _unavailable("ONNX Runtime", problem, "onnxruntime")


@register_backend("litert")
class LiteRTPredictor(_Heads):
    def __init__(self, path: Path, options: RuntimeOptions = RuntimeOptions()):
        interpreter_cls, load_delegate, resolver, source = litert_runtime()
        choice = choose_delegate(options.delegate, load_delegate, path, strict=options.strict)
        kwargs = {
            "num_threads": options.num_threads,
            "experimental_delegates": list(choice.delegates),
        }
        if not choice.use_default_xnnpack and resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter = interpreter_cls(model_path=str(path), **kwargs)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EdgeclsError(f"{path}: not a loadable TFLite model ({first})") from None
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self.path = path
        self.input_size = (int(inp["shape"][1]), int(inp["shape"][2]))
        self._in, self._out = inp, out
        self.input_dtype = np.dtype(inp["dtype"])
        self.input_quant = tuple(inp["quantization"])
        names = [
            n for sig in self.interpreter.get_signature_list().values() for n in sig["outputs"]
        ]
        self.values = values_of(names)
        self.io = {
            "input": _io(inp["dtype"], *inp["quantization"]),
            "output": _io(out["dtype"], *out["quantization"], self.values),
        }
        self.warnings = [choice.warning] if choice.warning else []
        try:
            self.metadata = _metadata(read_metadata(path.read_bytes(), METADATA_KEY), path)
        except ValueError as exc:
            raise EdgeclsError(f"{path}: {exc}") from None
        self.description = (
            f"LiteRT ({source}), delegate {choice.description}, {options.num_threads} threads"
        )

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        scale, zero = self.input_quant
        oscale, ozero = self._out["quantization"]
        outputs = []
        for image in batch:
            self.interpreter.set_tensor(
                self._in["index"], quantize(image[None], self.input_dtype, scale, zero)
            )
            self.interpreter.invoke()
            outputs.append(
                dequantize(self.interpreter.get_tensor(self._out["index"]), oscale, ozero)
            )
        return _batch(outputs)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(float16)": np.float16,
}


def onnx_providers(options: RuntimeOptions) -> list:
    """Providers in preference order, with TensorRT's engine cache and fp16 options."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = options.providers or PROVIDER_PREFERENCE
    missing = [p for p in wanted if p not in available]
    if options.providers and missing and options.strict:
        raise EdgeclsError(
            f"ONNX Runtime providers not available here: {', '.join(missing)} "
            f"(available: {', '.join(available)})"
        )
    providers: list = []
    for name in wanted:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = options.trt_cache or Path.home() / ".cache" / "edgecls" / "trt"
            cache.mkdir(parents=True, exist_ok=True)
            providers.append(
                (
                    name,
                    {
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_fp16_enable": options.fp16,
                    },
                )
            )
        else:
            providers.append(name)
    if "CPUExecutionProvider" not in [p if isinstance(p, str) else p[0] for p in providers]:
        providers.append("CPUExecutionProvider")
    return providers


@register_backend("onnxruntime")
class OnnxRuntimePredictor(_Heads):
    def __init__(self, path: Path, options: RuntimeOptions = RuntimeOptions()):
        ort = onnx_runtime()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.num_threads
        so.log_severity_level = 3
        if not options.fused_int8:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=onnx_providers(options))
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/… types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EdgeclsError(f"{path}: not a loadable ONNX model ({first})") from None
        inp = self.session.get_inputs()[0]
        self.path = path
        self.input_name = inp.name
        self.input_dtype = np.dtype(_ORT_TYPES.get(inp.type, np.float32))
        self.input_size = (int(inp.shape[1]), int(inp.shape[2]))
        self.output_name = self.session.get_outputs()[0].name
        self.values = values_of([self.output_name])
        out_type = _ORT_TYPES.get(self.session.get_outputs()[0].type, np.float32)
        self.io = {
            "input": _io(self.input_dtype, 0.0, 0),
            "output": _io(out_type, 0.0, 0, self.values),
        }
        active = self.session.get_providers()
        custom = self.session.get_modelmeta().custom_metadata_map
        self.metadata = _metadata(custom.get(METADATA_KEY), path)
        self.warnings = []
        if options.providers and options.providers[0] not in active:
            self.warnings.append(f"{options.providers[0]} not available; running on {active[0]}")
        self.description = (
            f"ONNX Runtime {ort.__version__}, providers {', '.join(active)}, "
            f"{options.num_threads} threads, CPU int8: {this_cpu().int8}"
        )
        if not options.fused_int8:
            self.description += ", int8 unfused"

    def outputs(self, batch: np.ndarray, chunk: int = 64) -> np.ndarray:
        outputs = [
            self.session.run(
                [self.output_name], {self.input_name: batch[i : i + chunk].astype(self.input_dtype)}
            )[0]
            for i in range(0, len(batch), chunk)
        ]
        return _batch(outputs)
