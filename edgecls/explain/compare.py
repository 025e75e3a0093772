"""Float against int8 (`--compare`): the images where an artifact and the float model disagree,
most apart first, and how far apart their attributions are: is the artifact looking at another
region, or at the same region less sharply?"""

from __future__ import annotations

import numpy as np

from edgecls.bundle.manifest import Artifact
from edgecls.explain.checks import DELETION_FRACTION


def disagreements(reference: np.ndarray, probs: np.ndarray, limit: int) -> tuple[np.ndarray, dict]:
    """Indices of the images whose top-1 differs, largest max |Δprob| first (at most `limit`),
    and the figures over every image checked."""
    delta = np.abs(probs - reference).max(axis=1)
    differ = np.flatnonzero(probs.argmax(1) != reference.argmax(1))
    order = differ[np.argsort(-delta[differ], kind="stable")][:limit]
    return order, {
        "checked": len(probs),
        "disagree": len(differ),
        "shown": len(order),
        "agreement": float(1 - len(differ) / len(probs)),
        "max_abs_prob_diff": float(delta.max()),
    }


def map_distance(a: np.ndarray, b: np.ndarray) -> dict:
    """Spearman rank correlation of two attribution maps over their pixels (1: the same order of
    importance), and the overlap (intersection over union) of their top 10% pixels."""
    from scipy.stats import spearmanr

    constant = np.ptp(a) == 0 or np.ptp(b) == 0  # no order of importance to correlate
    rho = None if constant else float(spearmanr(a.ravel(), b.ravel()).statistic)
    n = max(1, int(DELETION_FRACTION * a.size))
    top_a = np.argsort(a.ravel(), kind="stable")[::-1][:n]
    top_b = np.argsort(b.ravel(), kind="stable")[::-1][:n]
    shared = len(np.intersect1d(top_a, top_b))
    return {
        "rank_correlation": rho,
        "top_overlap": shared / (2 * n - shared),
    }


def layers_named(artifact: Artifact | None) -> list[dict]:
    """The layers the artifact's per-layer error table names (the worst first, as export kept
    them in the manifest, less those without error; every layer is in layer_errors.json)."""
    if artifact is None:
        return []
    return [
        {"tensor": r.tensor, "op": r.op, "error": r.error, "rmse_scale": r.rmse_scale}
        for r in artifact.worst_layers
        if r.error > 0
    ]
