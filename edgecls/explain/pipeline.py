"""`edgecls explain`: SHAP reports of the float Keras model or of any bundle artifact, with checks
that they are faithful.

Three methods, looked up by name: `gradient` (SHAP's GradientExplainer, background drawn from the
run's training images; the Keras model only), `partition` (SHAP's Partition explainer with a blur
image masker) and `kernel` (Kernel SHAP over SLIC superpixels); the last two only call the model,
so they explain a TFLite or ONNX artifact through the predictor the board uses, without
TensorFlow. Per image the report shows the original, heat maps for the predicted and top-k
classes and a bar chart of probabilities; it also measures, unlike a picture, whether the
attributions mean anything: masking the most attributed 10% of pixels must lower the predicted
probability more than masking a random 10% (deletion check), and on images with ground-truth
defect masks the most attributed point should fall on the defect (pointing game). With
--compare, the images where an artifact and the float model disagree get both attributions side
by side and how far apart they are (compare.py). An anomaly run or bundle is explained by its own
anomaly map instead, with the same checks on its score (anomaly.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from edgecls.durable import staged_folder
from edgecls.errors import EdgeclsError
from edgecls.explain.anomaly import explain_anomaly
from edgecls.explain.checks import deletion_check, mask_for, pointing_game
from edgecls.explain.compare import disagreements, layers_named, map_distance
from edgecls.explain.figures import Panel, figure
from edgecls.explain.methods import EXPLAINERS, Method, model_agnostic
from edgecls.explain.models import (
    Explained,
    Subject,
    from_bundle,
    from_run,
    is_anomaly,
    is_bundle,
    read_images,
    require_explain_packages,
)
from edgecls.explain.report import check_out, report_folder, report_html, summary
from edgecls.runs import RunSource, run_split


@dataclass(frozen=True)
class ExplainConfig:
    run: Path  # run folder or .keras file (labels.txt beside it), or a bundle folder
    images: tuple[Path, ...]
    out: Path | None = None  # default reports/<run name> or reports/<bundle>-<artifact>
    # SHAP's settings, None for their defaults (SHAP_DEFAULTS): an anomaly model, explained by
    # its own map, refuses any that is given
    method: str | None = None  # None: gradient for a run, kernel for a bundle
    background: int | None = None
    max_evals: int | None = None  # model evaluations (samples) per image; None: the method's
    top_k: int | None = None
    seed: int = 0
    segments: int | None = None  # kernel: about this many SLIC superpixels per image
    artifact: str | None = None  # a bundle's artifact file (default: its int8 one)
    compare: bool = False  # a bundle: the artifact against the float model where they disagree
    compare_images: int | None = None  # --compare: at most this many images, most apart first


SHAP_DEFAULTS = {"background": 50, "top_k": 2, "segments": 50, "compare_images": 8}


@dataclass
class Inputs:
    """The images to explain, as the model sees them, and the model's answers."""

    paths: list[Path]
    x: np.ndarray  # uint8 (N, H, W, 3)
    probs: np.ndarray
    classes: list[list[int]]  # the classes explained per image, the model's prediction first
    truth: list[int | None]  # the label index of the image's folder name, where it is a label
    reference: np.ndarray | None = None  # --compare: the float model's probabilities

    def subset(self, idx) -> Inputs:
        pick = list(idx)
        return Inputs(
            [self.paths[i] for i in pick],
            self.x[pick],
            self.probs[pick],
            [self.classes[i] for i in pick],
            [self.truth[i] for i in pick],
            None if self.reference is None else self.reference[pick],
        )


def _method(config: ExplainConfig, bundle: bool) -> tuple[ExplainConfig, Method]:
    """The method and the config with its defaults filled, refused before any model loads."""
    name = config.method or ("kernel" if bundle else "gradient")
    method = EXPLAINERS.get(name)
    if bundle and method.needs_keras:
        raise EdgeclsError(
            f"--method {name} needs the float Keras model: explain a bundle artifact with "
            f"{' or '.join(model_agnostic())}, or give the run folder"
        )
    if not bundle and (config.artifact or config.compare):
        raise EdgeclsError(
            f"--artifact and --compare take a bundle folder (with manifest.json), not "
            f"{config.run}: make one with `edgecls export`"
        )
    unset = {k: v for k, v in SHAP_DEFAULTS.items() if getattr(config, k) is None}
    config = replace(config, **unset)
    if min(config.top_k, config.background, config.compare_images) < 1:
        raise EdgeclsError("--top-k, --background and --compare-images must be at least 1")
    config = replace(config, method=name, max_evals=config.max_evals or method.evals)
    if config.max_evals < 1:
        raise EdgeclsError("--max-evals must be at least 1")
    if method.check:
        method.check(config)
    return config, method


def _background(config: ExplainConfig, source: RunSource, spec, rng) -> tuple[np.ndarray, str]:
    """Background images from the run's training split, or none when that data is not here."""
    try:
        split, where = run_split(source, "train")
    except EdgeclsError:
        where = "the explained images (the run's training data is not here)"
        return np.zeros((0, *spec.size, 3), np.uint8), where
    picks = rng.choice(len(split), min(config.background, len(split)), replace=False)
    return np.stack([spec.load_image(split.paths[i]) for i in picks]), where


def _gradient_background(config, method: Method, subject: Subject, inputs: Inputs, rng, console):
    """The background gradients need, and where it came from; the other methods need none."""
    if not method.needs_keras:
        return np.zeros((0, *subject.spec.size, 3), np.float32), None
    background, where = _background(config, subject.run, subject.spec, rng)
    if not len(background):  # SHAP's baseline changes with it: the user must know
        console.print(f"[yellow]note:[/] background from {where}", highlight=False)
    background = (background if len(background) else inputs.x).astype(np.float32)
    return background, {"n": len(background), "source": where}


def _inputs(config: ExplainConfig, subject: Subject, console: Console) -> tuple[Inputs, list]:
    paths, x, skipped = read_images(config.images, subject.spec, console)
    probs = subject.model.predict(x.astype(np.float32))
    k = min(config.top_k, probs.shape[1])
    classes = [list(np.argsort(p)[::-1][:k]) for p in probs]
    index = {label: i for i, label in enumerate(subject.labels)}
    truth = [index.get(p.parent.name) for p in paths]
    reference = subject.reference.predict(x.astype(np.float32)) if subject.reference else None
    return Inputs(paths, x, probs, classes, truth, reference), skipped


def _disagreeing(config: ExplainConfig, inputs: Inputs) -> tuple[Inputs, dict]:
    """--compare: the images where the two disagree, each explained for both predictions."""
    picks, figures = disagreements(inputs.reference, inputs.probs, config.compare_images)
    chosen = inputs.subset(picks)
    chosen.classes = [
        [int(p.argmax()), int(r.argmax())]
        for p, r in zip(chosen.probs, chosen.reference, strict=True)
    ]
    return chosen, figures


def _reading_order(inputs: Inputs) -> Inputs:
    """Misclassified images first, then the least confident: where a reader should look."""
    confidence = inputs.probs.max(axis=1)
    wrong = [t is not None and t != c[0] for t, c in zip(inputs.truth, inputs.classes, strict=True)]
    return inputs.subset(sorted(range(len(wrong)), key=lambda i: (not wrong[i], confidence[i])))


def _attribute(method: Method, model: Explained, inputs: Inputs, background, config, console):
    """(N, K, H, W) attributions of `model` for the classes of `inputs`, and seconds per image."""
    if not len(inputs.x):
        return np.zeros((0, 0, *inputs.x.shape[1:3]), np.float32), None
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"SHAP {config.method}: {model.role}", total=len(inputs.x))
        attributions = method.attributions(
            model,
            inputs.x.astype(np.float32),
            background,
            inputs.classes,
            config,
            lambda n: progress.advance(task, n),
        )
    return attributions, (time.perf_counter() - start) / len(inputs.x)


def _row(subject: Subject, inputs: Inputs, i: int, attributions, rng) -> tuple[dict, Path | None]:
    pred, probs, path = inputs.classes[i][0], inputs.probs[i], inputs.paths[i]
    mask = mask_for(path)
    image = inputs.x[i].astype(np.float32)
    truth = inputs.truth[i]
    return {
        "image": str(path),
        "true_label": None if truth is None else subject.labels[truth],
        "predicted": subject.labels[pred],
        "confidence": float(probs[pred]),
        "top_k": [
            {"label": subject.labels[c], "probability": float(probs[c])} for c in inputs.classes[i]
        ],
        "deletion": deletion_check(subject.model.predict, image, attributions[i, 0], pred, rng),
        "pointing_hit": (
            pointing_game(attributions[i, 0], mask, subject.spec.size) if mask else None
        ),
    }, mask


def _compared(subject: Subject, inputs: Inputs, i: int, attributions, reference) -> dict:
    """What --compare adds to a row: the float model's answer and how far the maps are apart."""
    ref = inputs.reference[i]
    return {
        "reference_predicted": subject.labels[int(ref.argmax())],
        "reference_confidence": float(ref.max()),
        "max_abs_prob_diff": float(np.abs(inputs.probs[i] - ref).max()),
        "distance": [
            {"label": subject.labels[c], **map_distance(reference[i, k], attributions[i, k])}
            for k, c in enumerate(inputs.classes[i])
        ],
    }


def _panels(subject: Subject, inputs: Inputs, i: int, attributions, reference) -> list[Panel]:
    labels, model = subject.labels, subject.model
    if reference is None:
        return [
            Panel(f"SHAP: {labels[c]} ({inputs.probs[i, c]:.2f})", attributions[i, k])
            for k, c in enumerate(inputs.classes[i])
        ]
    ref = subject.reference
    return [
        Panel(f"{m.role}: {labels[c]} ({p[c]:.2f})", maps[i, k])
        for k, c in enumerate(inputs.classes[i])
        for m, p, maps in (
            (ref, inputs.reference[i], reference),
            (model, inputs.probs[i], attributions),
        )
    ]


def _rows(subject: Subject, inputs: Inputs, attributions, reference, out: Path, rng):
    """One report row and one figure per image; the figures are also written as PNGs."""
    rows, figures = [], []
    for i, path in enumerate(inputs.paths):
        row, mask = _row(subject, inputs, i, attributions, rng)
        bars = {subject.model.role: inputs.probs[i]}
        if reference is not None:
            row["compare"] = _compared(subject, inputs, i, attributions, reference)
            bars = {subject.reference.role: inputs.reference[i], **bars}
        panels = _panels(subject, inputs, i, attributions, reference)
        png = figure(inputs.x[i], panels, bars, subject.labels, mask)
        row["figure"] = f"{i:03d}_{path.stem}.png"
        (out / row["figure"]).write_bytes(png)
        rows.append(row)
        figures.append(png)
    return rows, figures


def _load(config: ExplainConfig) -> tuple[ExplainConfig, Method, Subject]:
    bundle = is_bundle(config.run)
    config, method = _method(config, bundle)
    if bundle:
        return config, method, from_bundle(config.run, config.artifact, config.compare)
    return config, method, from_run(config.run)


def explain(config: ExplainConfig, console: Console | None = None) -> dict:
    console = console or Console()
    if is_anomaly(config.run):  # the model's own map explains it, not SHAP
        return explain_anomaly(config, console)
    config, method, subject = _load(config)
    require_explain_packages()  # after the model: a device-only install lacks Keras first
    out = report_folder(config.out, subject.name)  # before minutes of SHAP, not after
    inputs, skipped = _inputs(config, subject, console)
    compared = None
    if config.compare:
        inputs, compared = _disagreeing(config, inputs)
        compared["layers"] = layers_named(subject.artifact)
    inputs = _reading_order(inputs)
    rng = np.random.default_rng(config.seed)
    background, bg = _gradient_background(config, method, subject, inputs, rng, console)
    attributions, seconds = _attribute(method, subject.model, inputs, background, config, console)
    reference = None
    if config.compare:
        reference, _ = _attribute(method, subject.reference, inputs, background, config, console)
    # built aside and swapped in whole: an earlier report is replaced, never mixed with this one
    with staged_folder(out, "the report") as folder:
        rows, figures = _rows(subject, inputs, attributions, reference, folder, rng)
        report = {
            "summary": summary(config, subject, rows, bg, seconds, compared),
            "images": rows,
            "skipped": skipped,
        }
        (folder / "explain.json").write_text(json.dumps(report, indent=2) + "\n")
        (folder / "report.html").write_text(report_html(report, figures), encoding="utf-8")
    report["out"] = str(out)
    return report


_check_out = check_out  # where the report folder's rule was first reached (report.py now)
