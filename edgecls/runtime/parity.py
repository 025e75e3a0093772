"""Parity: float reference vs an artifact on the same labelled images. TF-free, so the board can
re-run the very same check (`edgecls parity`) on its own runtime."""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.runtime.bundle import Bundle, load_bundle
from edgecls.runtime.manifest import (
    MANIFEST,
    CheckFigures,
    DeviceCheck,
    Manifest,
    ParityFigures,
    ParityThresholds,
    save_manifest,
)
from edgecls.schema import to_dict


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


@dataclass(frozen=True)
class ParityRow:
    """One line of a parity table, for the terminal and parity.md alike."""

    file: str
    precision: str
    bytes: int
    figures: ParityFigures

    def cells(self, markdown: bool) -> list[str]:
        f = self.figures
        if f.passed:
            gate = "pass" if markdown else "[green]pass[/]"
        else:
            gate = ("**FAIL**: " if markdown else "[bold red]FAIL[/] ") + "; ".join(f.failures)
        return [
            f"`{self.file}`" if markdown else self.file,
            self.precision,
            f"{self.bytes:,}" if markdown else f"{self.bytes / 1024:,.0f} KiB",
            f"{f.accuracy:.4f}",
            f"{f.accuracy_drop:+.2f}",
            f"{f.agreement:.4f}",
            f"{f.mean_abs_prob_diff:.2e}",
            f"{f.max_abs_prob_diff:.2e}",
            gate,
        ]


PARITY_COLUMNS = (
    "artifact",
    "precision",
    "size",
    "accuracy",
    "drop (points)",
    "agreement",
    "mean abs Δprob",
    "max abs Δprob",
    "gate",
)


def parity_rows(artifacts) -> list[ParityRow]:
    return [ParityRow(a.file, a.precision, a.bytes, a.parity) for a in artifacts]


def parity_markdown(manifest: Manifest) -> str:
    """parity.md: the table a person reads before copying a bundle to a board."""
    p, t = manifest.parity, manifest.parity.thresholds
    lines = [
        f"# Parity: {manifest.name}",
        "",
        f"Reference: {p.reference} (accuracy {p.reference_accuracy:.4f}) on {p.n} "
        f"labelled images from `{p.data}`, checked on {', '.join(p.checked_on)}.",
        f"Gates: quantized artifacts lose at most {t.max_drop} accuracy points and agree on the "
        f"top-1 label for at least {t.min_agreement:.0%} of images; float32 artifacts match the "
        f"float model within {t.float_tolerance:.0e} in probability.",
        "",
        "| " + " | ".join(PARITY_COLUMNS) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *(
            "| " + " | ".join(r.cells(markdown=True)) + " |"
            for r in parity_rows(manifest.artifacts)
        ),
        *_checks_markdown(manifest),
        *_layers_markdown(manifest.artifacts),
        *_repair_markdown(manifest.artifacts),
    ]
    failed = [a.file for a in manifest.artifacts if not a.passed]
    lines += [
        "",
        f"**{len(failed)} artifact(s) failed their gate: {', '.join(failed)}.** The device "
        "refuses them unless run with `--allow-failed`."
        if failed
        else "All artifacts passed.",
        "",
    ]
    return "\n".join(lines)


def _checks_markdown(manifest: Manifest) -> list[str]:
    checks = manifest.parity.device_checks
    if not checks:
        return []
    lines = [
        "",
        "## Checks recorded by `edgecls parity --record`",
        "",
        "| date | architecture | board | images | result |",
        "|---|---|---|---:|---|",
    ]
    for c in checks:
        bad = [f for f, r in c.artifacts.items() if not r.passed]
        held = manifest.gates_held({f: r.passed for f, r in c.artifacts.items()})
        result = (
            ("pass" if not bad else "pass (failed int8 replaced by int8-mixed)")
            if held
            else (f"**FAIL**: {', '.join(bad)}")
        )
        lines.append(f"| {c.date} | {c.architecture} | {c.board} | {c.n} | {result} |")
    return lines


def _short(tensor: str, width: int = 60) -> str:
    """A tensor name for a table: TFLite joins fused ops' names with ';', the first says it."""
    name = tensor.split(";")[0].replace("|", "/")
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _layers_markdown(artifacts) -> list[str]:
    """Each int8 artifact's worst layers by per-layer quantization error."""
    rated = [a for a in artifacts if a.worst_layers]
    if not rated:
        return []
    lines = [
        "",
        "## Per-layer int8 error",
        "",
        "Each quantized tensor against the float value it stands for, on calibration images: "
        "RMS error of each channel over that channel's standard deviation, averaged over the "
        "channels (0: exact, 1: the signal is gone), and the RMSE in quantization steps (about "
        "0.29 is plain rounding). Ten worst per artifact; every layer in `layer_errors.json`.",
    ]
    for a in rated:
        lines += [
            "",
            f"`{a.file}`:",
            "",
            "| layer | op | error | RMSE / step |",
            "|---|---|---:|---:|",
        ]
        lines += [
            f"| `{_short(x.tensor)}` | {x.op} | {x.error:.3f} | {x.rmse_scale:.2f} |"
            for x in a.worst_layers
        ]
    return lines


def _repair_markdown(artifacts) -> list[str]:
    """What the repair of a failed int8 artifact did, what it tried, and what it costs."""
    by_file = {a.file: a for a in artifacts}
    lines = []
    for a in (a for a in artifacts if a.repair):
        r = a.repair
        lines += [
            "",
            f"## Repaired int8: `{a.file}`",
            "",
            f"`{r['plain']}` failed its gate. Changed: {r['summary']} "
            f"(search {r['seconds']:.1f} s, {len(r['attempts'])} tries).",
            "",
            "| try | agreement | drop (points) | gate | seconds |",
            "|---|---:|---:|---|---:|",
            *(
                f"| {t['changes']} | {t['agreement']:.4f} | {t['accuracy_drop']:+.2f} | "
                f"{'pass' if t['passed'] else 'fail'} | {t['seconds']:.2f} |"
                for t in r["attempts"]
            ),
            "",
            "Cost beside float32 and plain int8 (latency: median ms per image on the export "
            "machine):",
            "",
            "| artifact | precision | bytes | latency (ms) |",
            "|---|---|---:|---:|",
            *(
                f"| `{f}` | {by_file[f].precision} | {by_file[f].bytes:,} | {ms:.2f} |"
                for f, ms in r["latency_ms"].items()
                if f in by_file
            ),
        ]
    return lines


def save_bundle_files(root: Path, manifest: Manifest) -> None:
    """manifest.json and parity.md: one writer for the export and `edgecls parity --record`."""
    save_manifest(root, manifest, parity_markdown(manifest))


@dataclass
class CheckReport:
    """`edgecls parity` on this machine: the figures per artifact, and its exact outputs so that
    another machine's report can be compared bit for bit."""

    bundle: Bundle
    data: str
    paths: list[Path]
    y_true: np.ndarray
    reference: str
    thresholds: ParityThresholds
    figures: dict[str, ParityFigures]
    runtimes: dict[str, str]
    outputs: dict[str, np.ndarray]
    board: str

    @property
    def passed(self) -> bool:
        return self.bundle.manifest.gates_held({f: r.passed for f, r in self.figures.items()})

    @property
    def rows(self) -> list[ParityRow]:
        return [
            ParityRow(a.file, a.precision, a.bytes, self.figures[a.file])
            for a in self.bundle.artifacts
        ]

    def device_check(self) -> DeviceCheck:
        return DeviceCheck(
            architecture=platform.machine(),
            board=self.board,
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            data=self.data,
            n=len(self.y_true),
            reference=self.reference,
            artifacts={
                file: CheckFigures(
                    f.accuracy, f.agreement, f.max_abs_prob_diff, self.runtimes[file], f.failures
                )
                for file, f in self.figures.items()
            },
        )

    def to_dict(self) -> dict:
        ref = self.outputs[self.reference]
        return {
            "name": self.bundle.manifest.name,
            "labels": self.bundle.labels,
            "paths": [str(p) for p in self.paths],
            "parity": {
                "reference": self.reference,
                "data": self.data,
                "n": len(self.y_true),
                "reference_accuracy": float((ref.argmax(1) == self.y_true).mean()),
                "thresholds": to_dict(self.thresholds),
                "checked_on": [platform.machine()],
                "board": self.board,
                "passed": self.passed,
            },
            "artifacts": [
                {
                    "file": a.file,
                    "format": a.format,
                    "precision": a.precision,
                    "parity": {
                        **to_dict(self.figures[a.file]),
                        "passed": self.figures[a.file].passed,
                    },
                    "runtime": self.runtimes[a.file],
                    "outputs": self.outputs[a.file].tolist(),  # exact: other machines compare bits
                }
                for a in self.bundle.artifacts
            ],
        }


def _predict_in_chunks(bundle: Bundle, predictors: dict, paths, chunk: int = 64) -> dict:
    """Every predictor's outputs on the images, decoded a chunk at a time: a board checking
    thousands of photos never holds them all in memory."""
    parts: dict[str, list[np.ndarray]] = {file: [] for file in predictors}
    for i in range(0, len(paths), chunk):
        images = bundle.input_spec.load_batch(paths[i : i + chunk])
        for file, predictor in predictors.items():
            parts[file].append(predictor.predict(images))
    return {file: np.concatenate(p) for file, p in parts.items()}


def check_bundle(
    bundle_dir,
    data,
    *,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    options=None,
) -> CheckReport:
    """Re-run a bundle's parity on `data` with this machine's runtimes and no TensorFlow.

    The reference is the bundle's float32 artifact (TFLite first), which export proved equal to
    the Keras model; every artifact, that one included, is compared with it.
    """
    from edgecls.folders import load_eval_split
    from edgecls.runtime.doctor import board

    bundle = load_bundle(Path(bundle_dir))
    base = bundle.manifest.parity.thresholds
    thresholds = replace(
        base,
        max_drop=base.max_drop if max_drop is None else max_drop,
        min_agreement=base.min_agreement if min_agreement is None else min_agreement,
    )
    floats = sorted(
        (a for a in bundle.artifacts if a.precision == "float32"),
        key=lambda a: a.format != "tflite",
    )
    if not floats:
        raise EdgeclsError(f"{bundle.root}: no float32 artifact to use as the parity reference")
    split, _ = load_eval_split(Path(data), bundle.labels)
    if len(split) == 0:
        raise EdgeclsError(f"{data}: no labelled images")
    y_true = np.asarray(split.labels)
    predictors = {a.file: bundle.load(a, options, allow_failed=True) for a in bundle.artifacts}
    outputs = _predict_in_chunks(bundle, predictors, split.paths)
    reference = outputs[floats[0].file]
    return CheckReport(
        bundle=bundle,
        data=str(data),
        paths=list(split.paths),
        y_true=y_true,
        reference=floats[0].file,
        thresholds=thresholds,
        figures={
            a.file: compare(reference, outputs[a.file], y_true, a.precision, thresholds)
            for a in bundle.artifacts
        },
        runtimes={file: p.description for file, p in predictors.items()},
        outputs=outputs,
        board=board(),
    )


def record_check(report: CheckReport) -> Path:
    """Add a check to the bundle's manifest and parity.md, so the bundle says on which
    architectures its parity was checked (`checked_on` lists those where it passed;
    `device_checks` keeps every check, failed ones included). The artifacts and their hashes
    are not touched; a bundle that cannot be written is left as it was."""
    bundle = load_bundle(report.bundle.root)  # as it is now, not as it was when the check began
    manifest = bundle.manifest.with_check(report.device_check())
    try:
        save_bundle_files(bundle.root, manifest)
    except OSError as exc:
        raise EdgeclsError(
            f"{bundle.root}: cannot record the check ({exc.strerror or exc}); make the bundle "
            "writable or run without --record"
        ) from None
    return bundle.root / MANIFEST
