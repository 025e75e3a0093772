"""`edgecls export` and `edgecls parity`."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import typer
from rich.table import Table

from edgecls.bundle.formats import FORMATS
from edgecls.cli.common import command, console, err, fail


def _parity_table(rows, title: str) -> None:
    from edgecls.bundle.report import PARITY_COLUMNS

    table = Table(title=title)
    for col in PARITY_COLUMNS:
        left = col in ("artifact", "precision", "gate")
        table.add_column(col, justify="left" if left else "right")
    for row in rows:
        table.add_row(*row.cells(markdown=False))
    console.print(table)


FORMAT_OPTION = typer.Option(
    ",".join(FORMATS.names), "--format", help=f"comma-separated: {','.join(FORMATS.names)}"
)
ONNX_INT8_OPTION = typer.Option(
    "u8u8",
    help="int8 ONNX activations/weights: u8u8 (same bits on ARM and x86), u8s8, or s8s8 "
    "(symmetric int8 QDQ, the form TensorRT takes: for a Jetson)",
)
REPAIR_OPTION = typer.Option(
    True,
    "--repair/--no-repair",
    help="when an int8 artifact fails its gate: equalize, recalibrate, then keep its worst "
    "layers in float, writing model_int8_mixed.* if that passes",
)


def _print_repairs(manifest) -> None:
    """One line per repaired int8: which failed, which passes instead, how, and for ONNX when
    this CPU's own kernels may be the cause."""
    from edgecls.bundle.cpu import onnx_int8_caveat

    for a in manifest.artifacts:
        if a.repair:
            onnx = FORMATS.get(a.format).backend == "onnxruntime"
            caveat = onnx_int8_caveat(manifest.calibration.onnx_int8) if onnx else ""
            console.print(
                f"{a.repair['plain']} failed its gate; {a.file} passes ({a.repair['summary']})"
                + (f"; {caveat}" if caveat else ""),
                highlight=False,
                soft_wrap=True,
            )


@command()
def export(
    source: Path = typer.Argument(..., help="run folder (or a .keras file with labels.txt)"),
    out: Path | None = typer.Option(None, help="bundle folder; default export/<run name>"),
    int8: bool = typer.Option(False, "--int8", help="full-integer TFLite + static int8 ONNX (QDQ)"),
    fp16: bool = typer.Option(False, "--fp16", help="float16 TFLite and ONNX"),
    dynamic: bool = typer.Option(False, "--dynamic", help="dynamic-range TFLite"),
    format: str = FORMAT_OPTION,
    io: str = typer.Option("uint8", help="int8 TFLite input/output type: uint8, int8 or float32"),
    onnx_int8: str = ONNX_INT8_OPTION,
    repair: bool = REPAIR_OPTION,
    calibration: Path | None = typer.Option(
        None, help="calibration images; default calibration_data/, else the run's training split"
    ),
    calibration_size: int = typer.Option(200, min=1, help="class-balanced calibration sample size"),
    eval_data: Path | None = typer.Option(
        None, help="labelled images for parity; default the run's test split"
    ),
    labels: Path | None = typer.Option(None, help="labels.txt for a bare .keras file"),
    max_drop: float = typer.Option(
        1.0, min=0.0, max=100.0, help="gate: most accuracy points a quantized artifact may lose"
    ),
    min_agreement: float = typer.Option(
        0.97, min=0.0, max=1.0, help="gate: least top-1 agreement with the float model"
    ),
    seed: int = typer.Option(0),
):
    """Export TFLite and ONNX artifacts with a parity gate against the float model."""
    from edgecls.bundle.manifest import ParityThresholds
    from edgecls.bundle.report import parity_rows
    from edgecls.export import ExportConfig, export_bundle
    from edgecls.export.mixed import RepairOptions

    wanted = {"float16": fp16, "dynamic": dynamic, "int8": int8}
    precisions = ("float32", *(p for p, on in wanted.items() if on))
    config = ExportConfig(
        source=source,
        out=out,
        formats=tuple(f.strip() for f in format.split(",") if f.strip()),
        precisions=precisions,
        io=io,
        onnx_int8=onnx_int8,
        calibration=calibration,
        calibration_size=calibration_size,
        eval_data=eval_data,
        labels=labels,
        seed=seed,
        thresholds=ParityThresholds(max_drop=max_drop, min_agreement=min_agreement),
        repair=RepairOptions(enabled=repair),
    )
    result = export_bundle(config, console)
    m = result.manifest
    _parity_table(parity_rows(m.artifacts), f"{result.out} (parity on {m.parity.n} images)")
    console.print(f"bundle: {result.out}  (manifest.json, parity.md, labels.txt)")
    _print_repairs(m)
    if not result.passed:
        failed = [a.file for a in m.artifacts if not a.passed]
        fail(
            f"parity gate failed for {', '.join(failed)}; see {result.out / 'parity.md'}",
            code=1,
        )


@command()
def parity(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    data: Path = typer.Option(..., help="labelled images: DIR/<class>/* or a split layout"),
    max_drop: float | None = typer.Option(
        None, min=0.0, max=100.0, help="default: the bundle's threshold"
    ),
    min_agreement: float | None = typer.Option(
        None, min=0.0, max=1.0, help="default: the bundle's threshold"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    delegate: str = typer.Option("auto", help="LiteRT delegate, as for `edgecls run`"),
    threads: int | None = typer.Option(None, help="inference threads; default all cores"),
    record: bool = typer.Option(
        False, "--record", help="add this check to the bundle's manifest.json and parity.md"
    ),
):
    """Re-run the parity checks of a bundle on other data, on this machine's runtimes."""
    from edgecls.bundle.backends import RuntimeOptions
    from edgecls.runtime.parity_check import check_bundle, record_check

    options = RuntimeOptions(threads=threads, delegate=delegate)
    report = check_bundle(
        bundle, data, max_drop=max_drop, min_agreement=min_agreement, options=options
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _parity_table(
            report.rows, f"{bundle} on {data} ({len(report.y_true)} images, {platform.machine()})"
        )
    if record:
        path = record_check(report)
        (err if as_json else console).print(f"recorded in {path}", highlight=False)
    if not report.passed:
        fail("parity gate failed on this data", code=1)
