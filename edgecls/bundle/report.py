"""The parity table as a person reads it (terminal and parity.md), and the one writer of a
bundle's manifest.json and parity.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecls.bundle.manifest import (
    Manifest,
    ParityFigures,
    save_manifest,
)


@dataclass(frozen=True)
class ParityRow:
    """One line of a parity table, for the terminal and parity.md alike."""

    file: str
    precision: str
    bytes: int
    figures: ParityFigures

    def cells(self, markdown: bool, scores: bool = False) -> list[str]:
        """The row's cells; `scores`: an anomaly bundle's AUROC and rank correlation too."""
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
            *((_figure(f.auroc), _figure(f.rank_correlation)) if scores else ()),
            gate,
        ]


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


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


def parity_columns(rows) -> tuple[str, ...]:
    """PARITY_COLUMNS, with AUROC and rank correlation where the rows have scores (anomaly)."""
    if not has_scores(rows):
        return PARITY_COLUMNS
    return (*PARITY_COLUMNS[:-1], "AUROC", "rank ρ", PARITY_COLUMNS[-1])


def has_scores(rows) -> bool:
    return any(r.figures.rank_correlation is not None for r in rows)


def parity_markdown(manifest: Manifest) -> str:
    """parity.md: the table a person reads before copying a bundle to a board."""
    p, t = manifest.parity, manifest.parity.thresholds
    rows = parity_rows(manifest.artifacts)
    lines = [
        f"# Parity: {manifest.name}",
        "",
        f"Reference: {p.reference} (accuracy {p.reference_accuracy:.4f}) on {p.n} "
        f"labelled images from `{p.data}`, checked on {', '.join(p.checked_on)}.",
        f"Gates: quantized artifacts lose at most {t.max_drop} accuracy points and agree on the "
        f"top-1 label for at least {t.min_agreement:.0%} of images; float32 artifacts match the "
        f"float model within {t.float_tolerance:.0e} in probability."
        + (_anomaly_gates(manifest) if manifest.anomaly else ""),
        "",
        "| " + " | ".join(parity_columns(rows)) + " |",
        "|---|---|" + "---:|" * (len(parity_columns(rows)) - 3) + "---|",
        *("| " + " | ".join(r.cells(True, has_scores(rows))) + " |" for r in rows),
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


def _anomaly_gates(manifest: Manifest) -> str:
    a, t = manifest.anomaly, manifest.parity.thresholds
    return (
        f" An anomaly bundle: the label is the verdict at the threshold {a.threshold:.4f} "
        f"(score: the {a.score}), so agreement is the verdicts'; where the images hold known "
        f"defects, AUROC may drop at most {t.max_auroc_drop}."
    )


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
