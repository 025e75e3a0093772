"""Metrics and reports for any `Predictor` on a labelled split, in fixed order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.folders import Split
from edgecls.runtime.preprocess import load_batch


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


def predict_split(predictor, split: Split, batch_size: int = 64, progress=None) -> np.ndarray:
    """Probabilities for every image of the split, in the split's order."""
    size = predictor.input_size
    chunks = []
    for i in range(0, len(split.paths), batch_size):
        chunks.append(predictor.predict(load_batch(split.paths[i : i + batch_size], size)))
        if progress is not None:
            progress(min(batch_size, len(split.paths) - i))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def evaluate(predictor, split: Split, classes: list[str], progress=None) -> Evaluation:
    probs = predict_split(predictor, split, progress=progress)
    return Evaluation(classes, list(split.paths), np.asarray(split.labels), probs)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def metrics(ev: Evaluation) -> dict:
    n = len(ev.classes)
    cm = confusion_matrix(ev.y_true, ev.y_pred, n)
    per_class = {}
    for i, name in enumerate(ev.classes):
        tp, support = cm[i, i], cm[i].sum()
        predicted = cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
        }
    supports = np.array([c["support"] for c in per_class.values()])
    macro = {
        k: float(np.mean([c[k] for c in per_class.values()])) for k in ("precision", "recall", "f1")
    }
    weighted = {
        k: float(np.average([c[k] for c in per_class.values()], weights=supports))
        if supports.sum()
        else 0.0
        for k in ("precision", "recall", "f1")
    }
    return {
        "accuracy": ev.accuracy,
        "n": len(ev.y_true),
        "classes": ev.classes,
        "per_class": per_class,
        "macro_avg": macro,
        "weighted_avg": weighted,
        "confusion_matrix": cm.tolist(),
    }


def classification_report(m: dict) -> str:
    width = max(12, *(len(c) for c in m["classes"]))
    head = f"{'':>{width}}  precision  recall  f1-score  support"
    rows = [head, ""]
    for name, c in m["per_class"].items():
        rows.append(
            f"{name:>{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:8.3f}"
            f"  {c['support']:7d}"
        )
    rows.append("")
    rows.append(f"{'accuracy':>{width}}  {'':9}  {'':6}  {m['accuracy']:8.3f}  {m['n']:7d}")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = m[key]
        rows.append(
            f"{label:>{width}}  {a['precision']:9.3f}  {a['recall']:6.3f}  {a['f1']:8.3f}"
            f"  {m['n']:7d}"
        )
    return "\n".join(rows) + "\n"


def plot_confusion_matrix(m: dict, path: Path) -> None:
    import matplotlib

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


def write_predictions(ev: Evaluation, path: Path) -> None:
    lines = ["path,true,predicted,confidence"]
    for p, t, y, prob in zip(ev.paths, ev.y_true, ev.y_pred, ev.probs.max(axis=1), strict=True):
        lines.append(f"{p},{ev.classes[t]},{ev.classes[y]},{prob:.6f}")
    path.write_text("\n".join(lines) + "\n")


def write_reports(ev: Evaluation, out: Path, extra: dict | None = None) -> dict:
    """metrics.json, classification_report.txt, confusion_matrix.png, predictions.csv."""
    out.mkdir(parents=True, exist_ok=True)
    m = {**metrics(ev), **(extra or {})}
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    (out / "classification_report.txt").write_text(classification_report(m))
    plot_confusion_matrix(m, out / "confusion_matrix.png")
    write_predictions(ev, out / "predictions.csv")
    return m
