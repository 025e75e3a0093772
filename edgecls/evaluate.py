"""`edgecls evaluate` and `edgecls predict` as library calls: any model (.keras, .tflite, .onnx)
with its labels and input path, metrics in numpy (no scikit-learn on the board), reports written
atomically."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import Predictor
from edgecls.bundle.labels import MAX_LABELS_BYTES, check_outputs, load_labels
from edgecls.bundle.preprocess import InputSpec
from edgecls.durable import write_text_atomic
from edgecls.errors import EdgeclsError
from edgecls.folders import Split, load_eval_split
from edgecls.schema import FileRefused, from_dict, open_regular

# What a model or labels file may weigh before its reader (which takes it whole) is let at it:
# TFLite and ONNX files end at 2 GB (flatbuffer, protobuf); labels.txt is a line per class.
MAX_MODEL_BYTES = 4_000_000_000


@dataclass
class Evaluation:
    classes: list[str]
    paths: list[Path]
    y_true: np.ndarray
    probs: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.y_pred == self.y_true).mean()) if len(self.y_true) else float("nan")


def predict_split(
    predictor, split: Split, batch_size: int = 64, progress=None, spec: InputSpec | None = None
) -> np.ndarray:
    """Probabilities for every image of the split, in the split's order."""
    spec = spec or InputSpec(*predictor.input_size)
    chunks = []
    for i in range(0, len(split.paths), batch_size):
        chunks.append(predictor.predict(spec.load_batch(split.paths[i : i + batch_size])))
        if progress is not None:
            progress(min(batch_size, len(split.paths) - i))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def evaluate(
    predictor: Predictor, split: Split, classes: list[str], progress=None, spec=None
) -> Evaluation:
    probs = predict_split(predictor, split, progress=progress, spec=spec)
    return Evaluation(classes, list(split.paths), np.asarray(split.labels), probs)


def confusion(ev: Evaluation) -> np.ndarray:
    """Rows: the true class, columns: the predicted one; every class, present or not."""
    k = len(ev.classes)
    return np.bincount(ev.y_true * k + ev.y_pred, minlength=k * k).reshape(k, k)


def _scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per class precision, recall, F1 and support; 0 where a ratio has nothing to divide by
    (as scikit-learn's zero_division=0), so a class absent from the data reads 0, not NaN."""
    hits, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    ratio = lambda a, b: np.divide(a, b, out=np.zeros(len(a)), where=b > 0)  # noqa: E731
    precision, recall = ratio(hits, predicted), ratio(hits, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _averages(s: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    weights = s["support"] / max(1, s["support"].sum())
    keys = ("precision", "recall", "f1")
    return {
        "macro_avg": {k: float(s[k].mean()) for k in keys},
        "weighted_avg": {k: float((s[k] * weights).sum()) for k in keys},
    }


def metrics(ev: Evaluation) -> dict:
    """Accuracy, per-class and averaged precision/recall/F1 and the confusion matrix, every class
    listed even when absent from the data; numpy alone, so a board needs no scikit-learn."""
    cm = confusion(ev)
    s = _scores(cm)
    per_class = {
        name: {
            "precision": float(s["precision"][i]),
            "recall": float(s["recall"][i]),
            "f1": float(s["f1"][i]),
            "support": int(s["support"][i]),
        }
        for i, name in enumerate(ev.classes)
    }
    return {
        "accuracy": ev.accuracy,
        "n": len(ev.y_true),
        "classes": ev.classes,
        "per_class": per_class,
        **_averages(s),
        "confusion_matrix": cm.tolist(),
    }


def classification_report_text(ev: Evaluation) -> str:
    """The table people know from scikit-learn's classification_report."""
    m = metrics(ev)
    width = max(12, *(len(c) for c in ev.classes))
    row = lambda name, p, r, f, n: f"{name:>{width}} {p:9.3f} {r:9.3f} {f:9.3f} {n:9d}"  # noqa: E731
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, c in m["per_class"].items():
        lines.append(row(name, c["precision"], c["recall"], c["f1"], c["support"]))
    lines += ["", f"{'accuracy':>{width}} {'':>9} {'':>9} {m['accuracy']:9.3f} {m['n']:9d}"]
    for key, title in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = m[key]
        lines.append(row(title, a["precision"], a["recall"], a["f1"], m["n"]))
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(m: dict, path: Path) -> bool:
    """confusion_matrix.png; False where matplotlib is not installed (a device-only install)."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(m["confusion_matrix"])
    n = len(m["classes"])
    fig, ax = plt.subplots(figsize=(2.2 + 0.7 * n, 1.8 + 0.7 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), m["classes"], rotation=45, ha="right")
    ax.set_yticks(range(n), m["classes"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_title(f"accuracy {m['accuracy']:.3f} (n={m['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_predictions(ev: Evaluation, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "predicted", "confidence"])
        for p, t, y, prob in zip(ev.paths, ev.y_true, ev.y_pred, ev.probs.max(axis=1), strict=True):
            writer.writerow([p, ev.classes[t], ev.classes[y], f"{prob:.6f}"])


def write_reports(ev: Evaluation, out: Path, extra: dict | None = None) -> dict:
    """metrics.json, classification_report.txt, confusion_matrix.png, predictions.csv."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        m = {**metrics(ev), **(extra or {})}
        if not plot_confusion_matrix(m, out / "confusion_matrix.png"):
            m["confusion_matrix_png"] = "not drawn: matplotlib is not installed"
        write_text_atomic(out / "metrics.json", json.dumps(m, indent=2) + "\n")
        write_text_atomic(out / "classification_report.txt", classification_report_text(ev))
        write_predictions(ev, out / "predictions.csv")
    except OSError as exc:
        raise EdgeclsError(
            f"--out {out}: cannot write the reports ({exc.strerror or exc})"
        ) from None
    return m


@dataclass
class LabelledModel:
    """A model file with the labels and input path it was made with: an artifact's own
    metadata first, then --labels or labels.txt beside it, then the run's config.json."""

    path: Path
    predictor: Predictor
    classes: list[str]
    spec: InputSpec


def open_model(model: Path, labels: Path | None = None) -> LabelledModel:
    from edgecls.bundle.backends import load_predictor
    from edgecls.runs import resolve_source

    model = Path(model)
    _check_file(model, MAX_MODEL_BYTES, "a model file (.keras, .tflite or .onnx)")
    if labels is not None:  # before the model loads: the quick check first
        _check_file(labels, MAX_LABELS_BYTES, "a labels file")
    if model.suffix == ".keras":  # the float model: TensorFlow, never on the board
        from edgecls.keras_predictor import KerasPredictor

        if not model.is_file():
            raise EdgeclsError(f"{model}: model file not found")
        predictor = KerasPredictor(model)
    else:
        predictor = load_predictor(model)
    meta = getattr(predictor, "metadata", None) or {}
    if labels is None and "labels" in meta:
        classes = list(meta["labels"])
        spec = from_dict(InputSpec, meta["input"], f"{model} (embedded metadata)")
    else:
        if labels is None and not (model.parent / "labels.txt").is_file():
            raise EdgeclsError(f"no labels.txt beside {model}: pass --labels FILE")
        source = resolve_source(model, labels) if model.suffix == ".keras" else None
        classes = source.labels if source else load_labels(labels or model.parent / "labels.txt")
        spec = (source or _Bare()).input_spec(predictor.input_size)
    check_outputs(predictor, classes, model)
    return LabelledModel(model, predictor, classes, spec)


def _check_file(path: Path, limit: int, what: str) -> None:
    """A file the readers take whole is a regular file within `limit`, or one line: a FIFO would
    block them, /dev/zero never end, a sparse file fill memory. A missing one is theirs to name."""
    if not Path(path).exists():
        return
    try:
        with open_regular(path, limit, what):
            pass
    except FileRefused as exc:
        raise EdgeclsError(f"{path}: {exc}") from None


class _Bare:
    """A .tflite/.onnx without metadata (converted by hand): today's input path."""

    def input_spec(self, size):
        return InputSpec(*size)


def evaluate_model(model: Path, data: Path, out: Path | None = None, labels=None, on_skip=None):
    """`edgecls evaluate`: metrics and reports of any model on a labelled folder."""
    m = open_model(model, labels)
    split, skipped = load_eval_split(data, m.classes)
    for path, why in skipped:
        if on_skip:
            on_skip(path, why)
    out = Path(out or Path(model).parent / "eval")
    ev = evaluate(m.predictor, split, m.classes, spec=m.spec)
    return write_reports(ev, out, {"model": str(model), "data": str(data)}), out


@dataclass(frozen=True)
class Prediction:
    image: Path
    top: list[tuple[str, float]]  # (label, probability), most likely first


def predict_images(model: Path, images, top_k: int = 1, labels=None, on_skip=None):
    """`edgecls predict`: the top-k labels of each image, in order; unreadable images are
    reported through `on_skip` and left out."""
    m = open_model(model, labels)
    for path in images:
        try:
            image = m.spec.load_image(path)
        except EdgeclsError as exc:
            if on_skip:
                on_skip(path, str(exc))
            continue
        probs = m.predictor.predict(image[None])[0]
        order = probs.argsort()[::-1][: max(1, top_k)]
        yield Prediction(Path(path), [(m.classes[i], float(probs[i])) for i in order])
