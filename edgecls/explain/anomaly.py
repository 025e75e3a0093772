"""`edgecls explain` on an anomaly model (a run or a bundle of `train --task anomaly`): its own
anomaly map is the explanation, so no SHAP. The map is what the score is the maximum of, and
what a person must be able to check: does the most anomalous point fall on the defect (pointing
game, against the sample's ground-truth masks), and does blurring the most anomalous 10% of
pixels lower the score more than blurring a random 10% (deletion check, on scores)? A bundle is
read through its artifact (default the int8 one) with the board's predictor, without
TensorFlow; a run through its float Keras model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from edgecls.bundle.anomaly import maps, margins, probabilities
from edgecls.durable import staged_folder
from edgecls.errors import EdgeclsError
from edgecls.explain.checks import deletion_check, mask_for, peak, pointing_game
from edgecls.explain.figures import anomaly_figure
from edgecls.explain.models import (
    Subject,
    from_bundle,
    from_run,
    is_bundle,
    read_images,
    require_explain_packages,
)
from edgecls.explain.report import anomaly_html, anomaly_summary, report_folder

# SHAP's settings: an anomaly model has no attribution method to pick, no classes to rank and
# no float model to compare maps with, so any of them given is refused, not silently ignored
SHAP_ONLY = ("method", "top_k", "compare", "compare_images", "max_evals", "segments", "background")


@dataclass
class Scored:
    """The images, as the model sees them, with what the model says of each."""

    paths: list[Path]
    x: np.ndarray  # uint8 (N, H, W, 3)
    margins: np.ndarray  # (N,) score - threshold: >= 0 is an anomaly
    heat: np.ndarray  # (N, H, W) the map upsampled to the input, score - threshold units
    probs: np.ndarray  # (N, 2) ok, anomaly: what the board reports
    truth: list[str | None]  # ok or anomaly where known (`_truth`)

    def subset(self, idx) -> Scored:
        pick = list(idx)
        return Scored(
            [self.paths[i] for i in pick],
            self.x[pick],
            self.margins[pick],
            self.heat[pick],
            self.probs[pick],
            [self.truth[i] for i in pick],
        )


def _given(value) -> bool:
    return value is not None and value is not False  # --compare is False unless given; 0 is given


def refuse_shap_options(config, bundle: bool) -> None:
    """One line naming what was given, before any model loads."""
    given = [f"--{k.replace('_', '-')}" for k in SHAP_ONLY if _given(getattr(config, k))]
    if given:
        them = "it" if len(given) == 1 else "them"
        raise EdgeclsError(
            f"{', '.join(given)}: not for an anomaly model, which its own anomaly map explains "
            f"(no SHAP, no classes to rank); drop {them}"
        )
    if config.artifact and not bundle:
        raise EdgeclsError(
            f"--artifact takes a bundle folder (with manifest.json), not {config.run}: "
            "make one with `edgecls export`"
        )


def score(subject: Subject, paths: list[Path], x: np.ndarray) -> Scored:
    """One pass of the model: score margins, verdicts, and maps upsampled (bilinear) to the
    input, on which the pointing game and the deletion check are played at pixel level."""
    import cv2

    raw = subject.model.outputs(x.astype(np.float32))
    h, w = subject.spec.size
    heat = [
        cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        for m in maps(raw, subject.anomaly.map_size)
    ]
    truth = [_truth(p, subject) for p in paths]
    return Scored(paths, x, margins(raw), np.stack(heat), probabilities(raw), truth)


def _truth(path: Path, subject: Subject) -> str | None:
    """ok or anomaly where known: a ground-truth defect mask, the folder's name, or the run's
    good and defect folders."""
    if mask_for(path):
        return "anomaly"
    if path.parent.name in subject.labels:
        return path.parent.name
    cfg = subject.run.config if subject.run else None
    known = [("anomaly", cfg.defects)] if cfg and cfg.defects else []
    known += [("ok", f) for f in (cfg.folders if cfg else [])]
    where = path.resolve()
    return next((label for label, f in known if where.is_relative_to(Path(f).resolve())), None)


def _deletion(subject: Subject, image: np.ndarray, heat: np.ndarray, rng) -> dict:
    """The deletion check on scores: the model's score margin stands in for a probability."""
    t = subject.anomaly.threshold

    def scores(batch: np.ndarray) -> np.ndarray:
        return margins(subject.model.outputs(batch))[:, None]

    d = deletion_check(scores, image.astype(np.float32), heat, 0, rng)
    return {"score": d["prob"] + t, "top_drop": d["top_drop"], "random_drop": d["random_drop"]}


def _row(subject: Subject, scored: Scored, i: int, rng) -> tuple[dict, Path | None]:
    path, heat = scored.paths[i], scored.heat[i]
    mask = mask_for(path)
    verdict = int(scored.probs[i].argmax())
    return {
        "image": str(path),
        "true_label": scored.truth[i],
        "predicted": subject.labels[verdict],
        "confidence": float(scored.probs[i, verdict]),
        "score": float(scored.margins[i]) + subject.anomaly.threshold,
        "margin": float(scored.margins[i]),
        "peak": list(peak(heat)),  # row, column in the input
        "deletion": _deletion(subject, scored.x[i], heat, rng),
        "pointing_hit": pointing_game(heat, mask, subject.spec.size) if mask else None,
    }, mask


def _reading_order(subject: Subject, scored: Scored) -> Scored:
    """Wrong verdicts first, then the scores nearest the threshold: where a reader should look."""
    verdicts = scored.probs.argmax(axis=1)
    pairs = zip(scored.truth, verdicts, strict=True)
    wrong = [t is not None and t != subject.labels[v] for t, v in pairs]
    near = np.abs(scored.margins)
    return scored.subset(sorted(range(len(wrong)), key=lambda i: (not wrong[i], near[i])))


def _rows(subject: Subject, scored: Scored, out: Path, rng, console: Console):
    """One report row and one figure per image, on one colour scale for the whole report."""
    t = subject.anomaly.threshold
    # the top at the upper quartile of the scores, not the one wildest peak, so that most maps
    # use the colours; the threshold always inside
    top = max(float(np.percentile(scored.margins, 75)), 0.1 * max(abs(t), 1.0))
    limits = (min(float(np.percentile(scored.heat, 5)), -top) + t, top + t)
    rows, figures = [], []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("anomaly maps", total=len(scored.paths))
        for i, path in enumerate(scored.paths):
            row, mask = _row(subject, scored, i, rng)
            png = anomaly_figure(scored.x[i], scored.heat[i] + t, row, t, limits, mask)
            row["figure"] = f"{i:03d}_{path.stem}.png"
            (out / row["figure"]).write_bytes(png)
            rows.append(row)
            figures.append(png)
            progress.advance(task)
    return rows, figures


def explain_anomaly(config, console: Console) -> dict:
    """The report of an anomaly run or bundle: maps, verdicts, pointing game, deletion check."""
    bundle = is_bundle(config.run)
    refuse_shap_options(config, bundle)
    subject = from_bundle(config.run, config.artifact, False) if bundle else from_run(config.run)
    require_explain_packages(("matplotlib",))  # SHAP and superpixels are not needed here
    out = report_folder(config.out, subject.name)
    paths, x, skipped = read_images(config.images, subject.spec, console)
    start = time.perf_counter()
    scored = score(subject, paths, x)
    seconds = (time.perf_counter() - start) / len(paths)
    scored = _reading_order(subject, scored)
    rng = np.random.default_rng(config.seed)
    # built aside and swapped in whole, as the SHAP report is
    with staged_folder(out, "the report") as folder:
        rows, figures = _rows(subject, scored, folder, rng, console)
        summary = anomaly_summary(subject, rows, seconds)
        report = {"summary": summary, "images": rows, "skipped": skipped}
        (folder / "explain.json").write_text(json.dumps(report, indent=2) + "\n")
        (folder / "report.html").write_text(anomaly_html(report, figures), encoding="utf-8")
    report["out"] = str(out)
    return report
