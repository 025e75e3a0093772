"""`edgecls explain`: SHAP reports for the float Keras model, with checks that they are faithful.

Two methods, looked up by name: `gradient` (SHAP's GradientExplainer, background drawn from the
run's training images) and `partition` (SHAP's Partition explainer with a blur image masker,
model-agnostic, bounded by --max-evals). Per image the report shows the original, heat maps for
the predicted and top-k classes and a bar chart of probabilities; it also measures, unlike a
picture, whether the attributions mean anything: masking the most attributed 10% of pixels must
lower the predicted probability more than masking a random 10% (deletion check), and on images
with ground-truth defect masks the most attributed point should fall on the defect (pointing game).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from edgecls.bundle.preprocess import image_paths
from edgecls.durable import (
    check_replaceable,
    check_writable_folder,
    staged_folder,
)
from edgecls.errors import EdgeclsError
from edgecls.explain.checks import DELETION_FRACTION, deletion_check, mask_for, pointing_game
from edgecls.explain.methods import EXPLAINERS
from edgecls.explain.report import figure, report_html
from edgecls.runs import RunSource, resolve_source, run_split


@dataclass(frozen=True)
class ExplainConfig:
    run: Path  # run folder or .keras file (labels.txt beside it)
    images: tuple[Path, ...]
    out: Path | None = None  # default reports/<run name>
    method: str = "gradient"
    background: int = 50
    max_evals: int = 500  # partition: model evaluations per image; gradient: samples per image
    top_k: int = 2
    seed: int = 0


@dataclass
class Inputs:
    """The images to explain, as the model sees them, and the float model's answers."""

    paths: list[Path]
    x: np.ndarray  # float32 (N, H, W, 3), pixels in [0, 255]
    probs: np.ndarray
    classes: list[list[int]]  # top-k class indices per image, most likely first
    skipped: list[dict]


def _background(config: ExplainConfig, source: RunSource, spec, rng) -> tuple[np.ndarray, str]:
    """Background images from the run's training split, or none when that data is not here."""
    try:
        split, where = run_split(source, "train")
    except EdgeclsError:
        where = "the explained images (the run's training data is not here)"
        return np.zeros((0, *spec.size, 3), np.uint8), where
    picks = rng.choice(len(split), min(config.background, len(split)), replace=False)
    return np.stack([spec.load_image(split.paths[i]) for i in picks]), where


def _inputs(config: ExplainConfig, model, spec, console: Console) -> Inputs:
    images, paths, skipped = [], [], []
    for p in (q for pattern in config.images for q in image_paths(pattern)):
        try:
            images.append(spec.load_image(p))
            paths.append(Path(p))
        except EdgeclsError as exc:
            skipped.append({"image": str(p), "reason": str(exc)})
            console.print(f"[yellow]skipped[/] {exc}", highlight=False, soft_wrap=True)
    if not images:
        raise EdgeclsError("no readable image to explain among --images")
    x = np.stack(images).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    k = min(config.top_k, probs.shape[1])
    classes = [list(np.argsort(p)[::-1][:k]) for p in probs]
    return Inputs(paths, x, probs, classes, skipped)


def _rows(model, inputs: Inputs, attributions, labels, spec, out: Path, rng):
    """One report row and one figure per image; the figures are also written as PNGs."""
    rows, figures = [], []
    for i, path in enumerate(inputs.paths):
        pred = inputs.classes[i][0]
        probs = inputs.probs[i]
        mask = mask_for(path)
        png = figure(inputs.x[i], attributions[i], inputs.classes[i], probs, labels, mask)
        name = f"{i:03d}_{path.stem}.png"
        (out / name).write_bytes(png)
        rows.append(
            {
                "image": str(path),
                "predicted": labels[pred],
                "confidence": float(probs[pred]),
                "top_k": [
                    {"label": labels[c], "probability": float(probs[c])} for c in inputs.classes[i]
                ],
                "deletion": deletion_check(model, inputs.x[i], attributions[i, 0], pred, rng),
                "pointing_hit": (
                    pointing_game(attributions[i, 0], mask, spec.size) if mask else None
                ),
                "figure": name,
            }
        )
        figures.append(png)
    return rows, figures


def _summary(config: ExplainConfig, source: RunSource, rows, background: dict) -> dict:
    top = np.asarray([r["deletion"]["top_drop"] for r in rows])
    rand = np.asarray([r["deletion"]["random_drop"] for r in rows])
    hits = [r["pointing_hit"] for r in rows if r["pointing_hit"] is not None]
    return {
        "method": config.method,
        "model": str(source.model_path),
        "n": len(rows),
        "background": background,
        "deletion": {
            "fraction": DELETION_FRACTION,
            "mean_top_drop": float(top.mean()),
            "mean_random_drop": float(rand.mean()),
            "top_beats_random": float((top > rand).mean()),
        },
        "pointing_game": {"n": len(hits), "hit_rate": float(np.mean(hits)) if hits else None},
    }


def explain(config: ExplainConfig, console: Console | None = None) -> dict:
    console = console or Console()
    method = EXPLAINERS.get(config.method)
    if config.top_k < 1 or config.background < 1:
        raise EdgeclsError("--top-k and --background must be at least 1")
    from edgecls.keras_predictor import load_keras_model

    source = resolve_source(config.run)
    out = Path(config.out or Path("reports") / source.name)
    _check_out(out)  # before minutes of SHAP, not after
    check_writable_folder(Path(os.path.abspath(out)).parent, "--out")  # where it is built
    model = load_keras_model(source.model_path)
    spec = source.input_spec((int(model.input_shape[1]), int(model.input_shape[2])))
    inputs = _inputs(config, model, spec, console)
    rng = np.random.default_rng(config.seed)
    background, bg_where = _background(config, source, spec, rng)
    if not len(background):  # SHAP's baseline changes with it: the user must know
        console.print(f"[yellow]note:[/] background from {bg_where}", highlight=False)
    background = (background if len(background) else inputs.x).astype(np.float32)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"SHAP {config.method}", total=len(inputs.x))
        attributions = method(
            model, inputs.x, background, inputs.classes, config, lambda n: progress.advance(task, n)
        )
    # built aside and swapped in whole: an earlier report is replaced, never mixed with this one
    with staged_folder(out, "the report") as folder:
        rows, figures = _rows(model, inputs, attributions, source.labels, spec, folder, rng)
        summary = _summary(config, source, rows, {"n": len(background), "source": bg_where})
        report = {"summary": summary, "images": rows, "skipped": inputs.skipped}
        (folder / "explain.json").write_text(json.dumps(report, indent=2) + "\n")
        (folder / "report.html").write_text(report_html(report, figures), encoding="utf-8")
    report["out"] = str(out)
    return report


# what a report folder holds: anything else in it is the user's, and the folder is not replaced
_REPORT_FILE = re.compile(r"explain\.json|report\.html|\d{3}_.*\.png")


def _is_report(folder: Path) -> bool:
    return (folder / "explain.json").is_file()


def _check_out(out: Path) -> None:
    """The report replaces an earlier report whole, and nothing else: a folder holding other
    files (or an earlier report mixed with them) is the user's."""
    check_replaceable(out, "an edgecls report", _is_report, _REPORT_FILE.fullmatch)
