"""Parity figures: a float reference against an artifact on the same labelled images, the one
comparison the export's gate, `edgecls parity` on a board and the repair search all make."""

from __future__ import annotations

import numpy as np

from edgecls.bundle.manifest import (
    ParityFigures,
    ParityThresholds,
)


def compare(
    reference: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    precision: str,
    thresholds: ParityThresholds,
) -> ParityFigures:
    """Figures for one artifact against the float reference, and why it fails its gate, if it
    does (float32: a conversion check; quantized: accuracy drop and agreement)."""
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
    return ParityFigures(
        n=len(y_true),
        accuracy=acc,
        reference_accuracy=ref_acc,
        accuracy_drop=drop,
        agreement=agreement,
        mean_abs_prob_diff=float(diff.mean()),
        max_abs_prob_diff=max_diff,
        failures=tuple(failures),
    )
