"""What an anomaly run reports: the threshold and what it does on held-out images (false
rejects of good ones, recall of known defects, AUROC), the score histogram and the ROC curve."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from edgecls.anomaly.config import AnomalyConfig
from edgecls.bundle.anomaly import LABELS, auroc
from edgecls.folders import FolderDataset
from edgecls.train.report import write_history


def verdict_figures(good: np.ndarray, bad: np.ndarray, threshold: float) -> dict:
    """Verdicts at the threshold on good and defective test images (score >= threshold: anomaly)."""
    figures = {
        "good": len(good),
        "defects": len(bad),
        "false_reject": float((good >= threshold).mean()) if len(good) else None,
    }
    if len(bad):
        figures |= {
            "recall": float((bad >= threshold).mean()),
            "auroc": auroc(good, bad),
            "accuracy": float(
                ((good < threshold).sum() + (bad >= threshold).sum()) / (len(good) + len(bad))
            ),
        }
    return figures


def report(
    config: AnomalyConfig,
    dataset: FolderDataset,
    history: list[dict],
    val: np.ndarray,
    test: np.ndarray,
    threshold: float,
    out: Path,
) -> dict:
    split = dataset.splits["test"]
    is_bad = np.asarray(split.labels) == 1
    metrics = {
        "task": "anomaly",
        "threshold": threshold,
        "max_false_reject": config.max_false_reject,
        "val": {"good": len(val), "false_reject": float((val >= threshold).mean())},
        "test": verdict_figures(test[~is_bad], test[is_bad], threshold),
        "epochs": len(history),
        "synthetic_accuracy": history[-1]["accuracy"] if history else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "score", "verdict"])
        for path, label, score in zip(split.paths, split.labels, test, strict=True):
            w.writerow([path, LABELS[label], f"{score:.4f}", LABELS[int(score >= threshold)]])
    write_history(history, out)
    _figures(val, test[~is_bad], test[is_bad], threshold, out)
    if dataset.skipped:
        dataset.write_skipped(out / "skipped.txt")
    return metrics


def roc_points(good: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct score."""
    cuts = np.unique(np.concatenate([good, bad]))[::-1]
    fpr = np.array([0.0, *[(good >= c).mean() for c in cuts]])
    tpr = np.array([0.0, *[(bad >= c).mean() for c in cuts]])
    return fpr, tpr


def _figures(val, good, bad, threshold: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate([val, good, bad])
    bins = np.linspace(everything.min(), everything.max(), 40)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for scores, name, colour in (
        (val, "good (threshold set on)", "tab:blue"),
        (good, "good (test)", "tab:green"),
        (bad, "defects", "tab:red"),
    ):
        if len(scores):
            ax.hist(scores, bins, alpha=0.55, color=colour, label=f"{name}, {len(scores)}")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("anomaly score (the map's maximum)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)
    if not len(bad) or not len(good):
        return
    fpr, tpr = roc_points(good, bad)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot(fpr, tpr, color="tab:red", label=f"AUROC {auroc(good, bad):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    at = ((good >= threshold).mean(), (bad >= threshold).mean())
    ax.plot(*at, "ko", label="the threshold")
    ax.set_xlabel("good parts rejected")
    ax.set_ylabel("defects found")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)
