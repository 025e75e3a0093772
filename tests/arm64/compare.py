"""Comparing what the emulated board computed with what x86 computed, artifact by artifact."""

from __future__ import annotations

import numpy as np

FLOAT_TOLERANCE = 1e-5


def compare_parity(x86: dict, arm: dict) -> tuple[list[str], list[str]]:
    """(problems, notes) for two `edgecls parity --json` reports of the same bundle and data.

    int8 TFLite must be bit-exact, float32 artifacts within 1e-5, and every artifact's gate must
    hold on ARM as it did on x86; the ONNX int8 difference is reported.
    """
    problems, notes = [], []
    if x86["paths"] != arm["paths"]:
        return ["the two reports are not on the same images"], notes
    by_file = {a["file"]: a for a in arm["artifacts"]}
    for ax in x86["artifacts"]:
        aa = by_file.get(ax["file"])
        if aa is None:
            problems.append(f"{ax['file']}: missing on ARM")
            continue
        X, A = np.asarray(ax["outputs"], np.float64), np.asarray(aa["outputs"], np.float64)
        diff = float(np.abs(X - A).max())
        agree = float((X.argmax(1) == A.argmax(1)).mean())
        what = f"{ax['file']}: max |Δprob| x86 vs ARM {diff:.3g}, top-1 agreement {agree:.4f}"
        if ax["format"] == "tflite" and ax["precision"] == "int8":
            differ = int((X != A).sum())
            if differ == 0:
                notes.append(f"{ax['file']}: int8 TFLite bit-exact on ARM ({X.size} values)")
            else:
                problems.append(f"{what}, {differ} of {X.size} values differ: must be bit-exact")
        elif ax["precision"] == "float32":
            (problems if diff > FLOAT_TOLERANCE else notes).append(
                what + (f" > {FLOAT_TOLERANCE}" if diff > FLOAT_TOLERANCE else "")
            )
        else:  # measured, not gated beyond the parity gate below
            notes.append(what + (", bit-exact" if np.array_equal(X, A) else ""))
        if ax["parity"]["passed"] and not aa["parity"]["passed"]:
            problems.append(
                f"{ax['file']}: parity gate passes on x86 but fails on ARM "
                f"({'; '.join(aa['parity']['failures'])})"
            )
    return problems, notes


def compare_frames(x86_rows: list[dict], arm_rows: list[dict]) -> list[str]:
    """Problems with two `edgecls run --json` outputs: every frame must get the same label."""
    if len(x86_rows) != len(arm_rows):
        return [f"{len(x86_rows)} frames on x86 but {len(arm_rows)} on ARM"]
    bad = [
        (x["frame"], x["label"], a["label"])
        for x, a in zip(x86_rows, arm_rows, strict=True)
        if x["label"] != a["label"]
    ]
    return [f"frame {f}: x86 {lx}, ARM {la}" for f, lx, la in bad]
