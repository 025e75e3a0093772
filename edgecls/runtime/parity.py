"""Parity: float reference vs an artifact on the same labelled images. TF-free, so the board can
re-run the very same check (`edgecls parity`) on its own runtime."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.runtime.bundle import MANIFEST, load_bundle


@dataclass(frozen=True)
class ParityThresholds:
    """Gates: quantized artifacts by accuracy drop and agreement, float32 ones by a conversion
    check (|Δprob| within `float_tolerance`)."""

    max_drop: float = 1.0  # accuracy points
    min_agreement: float = 0.97  # top-1 agreement with the float model
    float_tolerance: float = 1e-4

    def to_dict(self) -> dict:
        return asdict(self)


def compare(
    reference: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    precision: str,
    thresholds: ParityThresholds,
) -> dict:
    """Figures for one artifact against the float reference, and whether it passes its gate."""
    if probs.shape != reference.shape:
        raise ValueError(f"output shape {probs.shape} differs from the reference {reference.shape}")
    diff = np.abs(probs - reference)
    ref_acc = float((reference.argmax(1) == y_true).mean())
    acc = float((probs.argmax(1) == y_true).mean())
    result = {
        "n": len(y_true),
        "accuracy": acc,
        "reference_accuracy": ref_acc,
        "accuracy_drop": round((ref_acc - acc) * 100, 4),  # points; negative: better than float
        "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
        "mean_abs_prob_diff": float(diff.mean()),
        "max_abs_prob_diff": float(diff.max()),
    }
    failures = []
    if precision == "float32":
        if result["max_abs_prob_diff"] > thresholds.float_tolerance:
            failures.append(
                f"max |Δprob| {result['max_abs_prob_diff']:.2e} > "
                f"{thresholds.float_tolerance:.0e} (float32 must match the float model)"
            )
    else:
        if result["accuracy_drop"] > thresholds.max_drop:
            failures.append(
                f"accuracy drop {result['accuracy_drop']:.2f} points > {thresholds.max_drop}"
            )
        if result["agreement"] < thresholds.min_agreement:
            failures.append(f"agreement {result['agreement']:.3f} < {thresholds.min_agreement}")
    result["passed"] = not failures
    result["failures"] = failures
    return result


def parity_markdown(manifest: dict) -> str:
    """parity.md: the table a person reads before copying a bundle to a board."""
    p = manifest["parity"]
    t = p["thresholds"]
    lines = [
        f"# Parity: {manifest['name']}",
        "",
        f"Reference: {p['reference']} (accuracy {p['reference_accuracy']:.4f}) on {p['n']} "
        f"labelled images from `{p['data']}`, checked on {', '.join(p['checked_on'])}.",
        f"Gates: quantized artifacts lose at most {t['max_drop']} accuracy points and agree on the "
        f"top-1 label for at least {t['min_agreement']:.0%} of images; float32 artifacts match the "
        f"float model within {t['float_tolerance']:.0e} in probability.",
        "",
        "| artifact | precision | bytes | accuracy | drop (points) | agreement "
        "| mean abs Δprob | max abs Δprob | gate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in manifest["artifacts"]:
        r = a["parity"]
        gate = "pass" if r["passed"] else "**FAIL**: " + "; ".join(r["failures"])
        lines.append(
            f"| `{a['file']}` | {a['precision']} | {a['bytes']:,} | {r['accuracy']:.4f} | "
            f"{r['accuracy_drop']:+.2f} | {r['agreement']:.4f} | {r['mean_abs_prob_diff']:.2e} | "
            f"{r['max_abs_prob_diff']:.2e} | {gate} |"
        )
    failed = [a["file"] for a in manifest["artifacts"] if not a["parity"]["passed"]]
    checks = p.get("device_checks", [])
    if checks:
        lines += [
            "",
            "## Checks recorded by `edgecls parity --record`",
            "",
            "| date | architecture | board | images | result |",
            "|---|---|---|---:|---|",
        ]
        for c in checks:
            bad = [f for f, r in c["artifacts"].items() if not r["passed"]]
            result = "pass" if c["passed"] else f"**FAIL**: {', '.join(bad)}"
            lines.append(
                f"| {c['date']} | {c['architecture']} | {c['board']} | {c['n']} | {result} |"
            )
    lines += [
        "",
        f"**{len(failed)} artifact(s) failed their gate: {', '.join(failed)}.** The device "
        "refuses them unless run with `--allow-failed`."
        if failed
        else "All artifacts passed.",
        "",
    ]
    return "\n".join(lines)


def manifest_files(manifest: dict) -> dict[str, str]:
    """The bundle files that say what its artifacts are and how they did: one writer for both
    the export and `edgecls parity --record`."""
    return {MANIFEST: json.dumps(manifest, indent=2) + "\n", "parity.md": parity_markdown(manifest)}


def check_bundle(
    bundle_dir,
    data,
    *,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    options=None,
) -> dict:
    """Re-run a bundle's parity on `data` with this machine's runtimes and no TensorFlow.

    The reference is the bundle's float32 artifact (TFLite first), which export proved equal to
    the Keras model; every artifact, that one included, is compared with it.
    """
    from edgecls.folders import load_eval_split
    from edgecls.runtime.backends import RuntimeOptions, load_predictor
    from edgecls.runtime.doctor import board
    from edgecls.runtime.preprocess import load_batch

    bundle = load_bundle(Path(bundle_dir))
    options = options or RuntimeOptions()
    base = bundle.manifest["parity"]["thresholds"]
    thresholds = ParityThresholds(
        max_drop=base["max_drop"] if max_drop is None else max_drop,
        min_agreement=base["min_agreement"] if min_agreement is None else min_agreement,
        float_tolerance=base["float_tolerance"],
    )
    floats = sorted(
        (a for a in bundle.artifacts if a["precision"] == "float32"),
        key=lambda a: a["format"] != "tflite",
    )
    if not floats:
        raise EdgeclsError(f"{bundle.root}: no float32 artifact to use as the parity reference")
    split, _ = load_eval_split(Path(data), bundle.labels)
    if len(split) == 0:
        raise EdgeclsError(f"{data}: no labelled images")
    spec = bundle.input_spec
    images = load_batch(split.paths, (spec.height, spec.width))
    y_true = np.asarray(split.labels)
    predictors = {
        a["file"]: load_predictor(bundle.verified_path(a, allow_failed=True), options)
        for a in bundle.artifacts
    }
    predict = {file: p.predict(images) for file, p in predictors.items()}
    reference = predict[floats[0]["file"]]
    artifacts = [
        {
            **a,
            "parity": compare(reference, predict[a["file"]], y_true, a["precision"], thresholds),
            "runtime": predictors[a["file"]].description,
            "outputs": predict[a["file"]].tolist(),  # exact: other machines compare bits
        }
        for a in bundle.artifacts
    ]
    return {
        "name": bundle.manifest["name"],
        "labels": bundle.labels,
        "paths": [str(p) for p in split.paths],
        "parity": {
            "reference": floats[0]["file"],
            "data": str(data),
            "n": len(y_true),
            "reference_accuracy": float((reference.argmax(1) == y_true).mean()),
            "thresholds": thresholds.to_dict(),
            "checked_on": [platform.machine()],
            "board": board(),
        },
        "artifacts": artifacts,
    }


def record_check(bundle_dir, report: dict) -> Path:
    """Add a `check_bundle` report to the bundle's manifest and parity.md, so the bundle says
    on which architectures its parity was checked (`checked_on` lists those where it passed;
    `device_checks` keeps every check, failed ones included). Both files are replaced
    atomically; the artifacts and their hashes are not touched."""

    bundle = load_bundle(Path(bundle_dir))
    manifest = bundle.manifest
    p = report["parity"]
    passed = all(a["parity"]["passed"] for a in report["artifacts"])
    manifest["parity"].setdefault("device_checks", []).append(
        {
            "architecture": p["checked_on"][0],
            "board": p["board"],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": p["data"],
            "n": p["n"],
            "reference": p["reference"],
            "passed": passed,
            "artifacts": {
                a["file"]: {
                    k: a["parity"][k]
                    for k in ("accuracy", "agreement", "max_abs_prob_diff", "passed", "failures")
                }
                | {"runtime": a["runtime"]}
                for a in report["artifacts"]
            },
        }
    )
    if passed and p["checked_on"][0] not in manifest["parity"]["checked_on"]:
        manifest["parity"]["checked_on"].append(p["checked_on"][0])
    files = manifest_files(manifest)
    temps = {name: bundle.root / f".{name}.tmp-{os.getpid()}" for name in files}
    try:  # both written first, then both swapped in: a read-only bundle is left as it was
        for name, text in files.items():
            temps[name].write_text(text)
        for name, tmp in temps.items():
            os.replace(tmp, bundle.root / name)
    except OSError as exc:
        raise EdgeclsError(
            f"{bundle.root}: cannot record the check ({exc.strerror or exc}); make the bundle "
            "writable or run without --record"
        ) from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return bundle.root / MANIFEST
