"""What a finished run leaves for a person: the model and labels, config.json, history.csv and
its curves, the test metrics and reports, and a loud warning when the model learned nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from edgecls.evaluate import evaluate, write_reports
from edgecls.train.config import TrainConfig, TrainResult
from edgecls.train.models import backbone_of


def report(config, dataset, model, fitted, out: Path, console) -> TrainResult:
    """Model, labels, config, history, curves and test metrics into `out`; loud if the model
    learned nothing."""
    history, best_epoch, interrupted = fitted.history, fitted.best_epoch, fitted.interrupted
    if interrupted:
        console.print(
            f"[yellow]interrupted[/]: keeping the best weights so far (epoch {best_epoch})"
        )
    dataset.write_skipped(out / "skipped.txt")
    (out / "labels.txt").write_text("\n".join(dataset.classes) + "\n")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    model.save(out / "model.keras")
    if config.save_backbone:
        backbone_of(model).save_weights(out / "backbone.weights.h5")
    write_history(history, out)

    from edgecls.keras_predictor import KerasPredictor

    test_split = dataset.splits["test"]
    eval_split = test_split if len(test_split) else dataset.splits["val"]
    ev = evaluate(KerasPredictor.from_model(model), eval_split, dataset.classes)
    chance = float(np.bincount(ev.y_true).max() / len(ev.y_true)) if len(ev.y_true) else 0.0
    learned = bool(ev.accuracy > chance + 0.02)
    extra = {
        "split": "test" if len(test_split) else "val",
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "interrupted": interrupted,
        "majority_class_accuracy": chance,
        "learned": learned,
    }
    if len(dataset.sources) > 1:
        extra["per_source"] = per_source(ev, eval_split.source_of(), dataset.sources)
    m = write_reports(ev, out, extra)
    if "per_source" in m:
        with open(out / "classification_report.txt", "a", encoding="utf-8") as f:
            f.write(per_source_text(m["per_source"]))
    if not learned:
        warn_not_learned(config, ev.accuracy, chance, console)
    return TrainResult(out, m, dataset, len(history), best_epoch, interrupted)


def per_source(ev, sources: list[int], folders) -> dict[str, dict]:
    """Accuracy on each --data folder's images of the evaluated split (keyed by the folder as
    given), so a merged dataset cannot hide a folder the model does badly on."""
    sources, hits = np.asarray(sources, int), ev.y_pred == ev.y_true
    out = {}
    for i, folder in enumerate(folders):
        mask = sources == i
        out[str(folder.root)] = {
            "accuracy": float(hits[mask].mean()) if mask.any() else None,
            "n": int(mask.sum()),
        }
    return out


def per_source_text(rows: dict[str, dict]) -> str:
    lines = ["", "accuracy per --data folder:"]
    for folder, r in rows.items():
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"  {acc:>9} {r['n']:9d}  {folder}")
    return "\n".join(lines) + "\n"


def warn_not_learned(config: TrainConfig, accuracy: float, chance: float, console) -> None:
    """Advice that can help: more epochs, another lr or seed; for a backbone trained from
    scratch, pretrained weights (ImageNet or a backbone saved by another run)."""
    advice = "Train longer (--epochs), with a lower --lr or another --seed"
    if config.model.name == "seed-cnn":
        advice += ", or try a backbone (--model mobilenet-v2 --weights none, or imagenet)"
    elif config.model.scratch:
        advice += (
            ", or start from pretrained weights (--weights imagenet, or --weights PATH to a "
            "backbone saved with --save-backbone)"
        )
    console.print(
        f"[bold red]warning:[/] the model did not learn: test accuracy {accuracy:.3f} is no "
        f"better than always answering the largest class ({chance:.3f}). {advice}",
        highlight=False,
        soft_wrap=True,
    )


def write_history(history: list[dict], out: Path) -> None:
    if not history:
        return
    keys = list(history[0])
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h.get(key) for h in history], "o-", label=f"train {key}")
        if f"val_{key}" in history[0]:
            ax.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
