"""Parity figures: a float reference against an artifact on the same labelled images, the one
comparison the export's gate, `edgecls parity` on a board and the repair search all make."""

from __future__ import annotations

import numpy as np

from edgecls.bundle.anomaly import auroc, rank_correlation
from edgecls.bundle.manifest import (
    ParityFigures,
    ParityThresholds,
)

# an anomaly bundle's verdicts must agree with the float model's this often; that alone bounds
# the accuracy drop to 2 points
ANOMALY_THRESHOLDS = ParityThresholds(min_agreement=0.98, max_drop=2.0)


def compare(
    reference: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    precision: str,
    thresholds: ParityThresholds,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParityFigures:
    """Figures for one artifact against the float reference, and why it fails its gate, if it
    does (float32: a conversion check; quantized: accuracy drop and agreement). An anomaly
    bundle's `scores` (the reference's, the artifact's) add the rank correlation and, where
    `y_true` holds defects (1), the AUROC drop to its gate; agreement is then the verdicts'."""
    if probs.shape != reference.shape:
        raise ValueError(f"output shape {probs.shape} differs from the reference {reference.shape}")
    diff = np.abs(probs - reference)
    ref_acc = float((reference.argmax(1) == y_true).mean())
    acc = float((probs.argmax(1) == y_true).mean())
    drop = round((ref_acc - acc) * 100, 4)
    agreement = float((probs.argmax(1) == reference.argmax(1)).mean())
    max_diff = float(diff.max())
    failures = []
    if precision == "float32":
        if max_diff > thresholds.float_tolerance:
            failures.append(
                f"max |Δprob| {max_diff:.2e} > {thresholds.float_tolerance:.0e} "
                "(float32 must match the float model)"
            )
    else:
        if drop > thresholds.max_drop:
            failures.append(f"accuracy drop {drop:.2f} points > {thresholds.max_drop}")
        if agreement < thresholds.min_agreement:
            failures.append(f"agreement {agreement:.3f} < {thresholds.min_agreement}")
    extra = {} if scores is None else _score_figures(*scores, y_true)
    drop_auroc = extra.get("auroc_drop")
    if precision != "float32" and drop_auroc is not None and drop_auroc > thresholds.max_auroc_drop:
        failures.append(f"AUROC drop {drop_auroc:.4f} > {thresholds.max_auroc_drop}")
    return ParityFigures(
        n=len(y_true),
        accuracy=acc,
        reference_accuracy=ref_acc,
        accuracy_drop=drop,
        agreement=agreement,
        mean_abs_prob_diff=float(diff.mean()),
        max_abs_prob_diff=max_diff,
        failures=tuple(failures),
        **extra,
    )


def _score_figures(reference: np.ndarray, scores: np.ndarray, y_true: np.ndarray) -> dict:
    bad = np.asarray(y_true) == 1
    figures = {"rank_correlation": round(rank_correlation(reference, scores), 6)}
    if bad.any() and (~bad).any():
        ref, art = auroc(reference[~bad], reference[bad]), auroc(scores[~bad], scores[bad])
        figures |= {"auroc": art, "reference_auroc": ref, "auroc_drop": round(ref - art, 6)}
    return figures
