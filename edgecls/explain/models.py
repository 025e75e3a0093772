"""What is explained: the float Keras model of a run, or an artifact of a bundle run through the
same predictor the board uses (no TensorFlow on that path), behind one predict function."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.bundle.anomaly import AnomalySpec
from edgecls.bundle.folder import Bundle, load_bundle
from edgecls.bundle.formats import FORMATS, PRECISIONS
from edgecls.bundle.manifest import MANIFEST, Artifact, load_manifest
from edgecls.bundle.preprocess import InputSpec, image_paths
from edgecls.errors import EdgeclsError
from edgecls.runs import RunSource, resolve_source


@dataclass
class Explained:
    """A model as the explainers see it: probabilities of a float32 batch of pixels in [0, 255];
    the Keras model itself only where gradients are wanted."""

    name: str  # the model file, as the report names it
    predict: Callable[[np.ndarray], np.ndarray]
    keras: object | None = None
    role: str = "float"  # how a figure names it: "float" (Keras) or the artifact's file
    parity: str = ""  # a bundle artifact's parity at export, for the report
    outputs: Callable[[np.ndarray], np.ndarray] | None = None  # raw: an anomaly model's maps


@dataclass
class Subject:
    """The model to explain with its labels and input; for --compare, the float model it is
    held against; for a bundle, the artifact's record (its per-layer error table)."""

    model: Explained
    labels: list[str]
    spec: InputSpec
    name: str  # the default report folder's name
    run: RunSource | None = None  # a run's training split gives the gradient background
    reference: Explained | None = None
    artifact: Artifact | None = None
    anomaly: AnomalySpec | None = None  # an anomaly model's threshold and map size


# What explaining needs beyond a device install (the `explain` extra): module -> package.
EXPLAIN_PACKAGES = {"shap": "shap", "skimage": "scikit-image", "matplotlib": "matplotlib"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import hook that refuses it, a broken parent
        return False


def require_explain_packages(modules=tuple(EXPLAIN_PACKAGES)) -> None:
    """One line before minutes of SHAP, not a traceback after them (matplotlib draws last)."""
    missing = [EXPLAIN_PACKAGES[m] for m in modules if not _installed(m)]
    if missing:
        raise EdgeclsError(
            f"explain needs {', '.join(missing)}, not installed here: "
            "pip install 'edgecls[explain]' (a board without TensorFlow included)"
        )


def is_bundle(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def read_images(patterns, spec: InputSpec, console) -> tuple[list[Path], np.ndarray, list[dict]]:
    """The images as the model sees them; an unreadable one is skipped and listed, not fatal."""
    images, paths, skipped = [], [], []
    for p in (q for pattern in patterns for q in image_paths(pattern)):
        try:
            images.append(spec.load_image(p))
            paths.append(Path(p))
        except EdgeclsError as exc:
            skipped.append({"image": str(p), "reason": str(exc)})
            console.print(f"[yellow]skipped[/] {exc}", highlight=False, soft_wrap=True)
    if not images:
        raise EdgeclsError("no readable image to explain among --images")
    return paths, np.stack(images), skipped


def is_anomaly(path: Path) -> bool:
    """Whether a run or bundle is an anomaly model, read from its config or manifest alone: its
    explanation is its own map, decided before any model loads."""
    if is_bundle(path):
        return load_manifest(Path(path)).task == "anomaly"
    return resolve_source(path).task == "anomaly"


def _run_anomaly(source: RunSource) -> AnomalySpec | None:
    cfg = source.config
    if source.task != "anomaly":
        return None
    if cfg.threshold is None or cfg.map_size is None:
        raise EdgeclsError(f"{source.model_path}: an anomaly run without its threshold; retrain")
    return AnomalySpec(cfg.threshold, tuple(cfg.map_size), cfg.max_false_reject or 0.0)


def from_run(path: Path) -> Subject:
    from edgecls.keras_predictor import KerasPredictor

    source = resolve_source(path)
    keras = KerasPredictor(source.model_path)
    name = str(source.model_path)
    model = Explained(name, keras.predict, keras.model, "float", outputs=keras.outputs)
    spec = source.input_spec(keras.input_size)
    return Subject(model, source.labels, spec, source.name, source, anomaly=_run_anomaly(source))


def from_bundle(path: Path, artifact: str | None, compare: bool) -> Subject:
    """An artifact of the bundle (by default its int8 one), loaded only if its bytes are the
    ones the manifest lists; one that failed its parity gate is explained all the same, since
    that is when one wants to see why."""
    bundle = load_bundle(Path(path))
    chosen = bundle.artifact(artifact) if artifact else default_artifact(bundle)
    model = _artifact_model(bundle, chosen)
    reference = _artifact_model(bundle, bundle.float_reference()) if compare else None
    name = f"{bundle.manifest.name}-{Path(chosen.file).stem}" + ("-compare" * compare)
    return Subject(
        model,
        bundle.labels,
        bundle.input_spec,
        name,
        reference=reference,
        artifact=chosen,
        anomaly=bundle.manifest.anomaly,
    )


def default_artifact(bundle: Bundle) -> Artifact:
    """The int8 artifact the board runs on a CPU: a passing one first, TFLite first."""
    int8 = [a for a in bundle.artifacts if a.precision.startswith("int8")]
    if not int8:
        raise EdgeclsError(
            f"{bundle.root}: no int8 artifact; pass --artifact FILE "
            f"(one of {', '.join(bundle.manifest.files)})"
        )
    return min(
        int8,
        key=lambda a: (
            not a.passed,
            FORMATS.names.index(a.format),
            PRECISIONS.index(a.precision),
        ),
    )


def _artifact_model(bundle: Bundle, artifact: Artifact) -> Explained:
    predictor = bundle.load(artifact, allow_failed=True)

    def predict(x: np.ndarray) -> np.ndarray:  # the board feeds uint8 pixels: so do we
        return predictor.predict(np.clip(np.rint(x), 0, 255).astype(np.uint8))

    def outputs(x: np.ndarray) -> np.ndarray:
        return predictor.outputs(np.clip(np.rint(x), 0, 255).astype(np.uint8))

    passed = "passed" if artifact.passed else "FAILED (" + "; ".join(artifact.parity.failures) + ")"
    parity = (
        f"{passed} its parity gate at export (agreement {artifact.parity.agreement:.2%}, "
        f"max |Δprob| {artifact.parity.max_abs_prob_diff:.3g})"
    )
    return Explained(
        str(bundle.root / artifact.file), predict, None, artifact.file, parity, outputs
    )
