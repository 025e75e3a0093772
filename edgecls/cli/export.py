"""`edgecls export` and `edgecls parity`."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import typer
from rich.table import Table

from edgecls.bundle.formats import FORMATS
from edgecls.cli.common import command, console, err, fail, table_parameters, with_signature
from edgecls.cli.train import stopped
from edgecls.export.config import ExportOptions


def _parity_table(rows, title: str) -> None:
    from edgecls.bundle.report import has_scores, parity_columns

    table = Table(title=title)
    for col in parity_columns(rows):
        left = col in ("artifact", "precision", "gate")
        table.add_column(col, justify="left" if left else "right")
    for row in rows:
        table.add_row(*row.cells(False, has_scores(rows)))
    console.print(table)


def _kernel_caveat(manifest, artifact) -> str:
    """For an int8 ONNX artifact that failed here: why this CPU's own kernels may be the cause
    ('' where they are exact, or for another format)."""
    from edgecls.bundle.cpu import onnx_int8_caveat

    onnx = FORMATS.get(artifact.format).backend == "onnxruntime"
    if not onnx or not artifact.precision.startswith("int8") or manifest.calibration is None:
        return ""
    return onnx_int8_caveat(manifest.calibration.onnx_int8)


def _print_repairs(manifest) -> None:
    """One line per repaired int8: which failed, which passes instead, how, and for ONNX when
    this CPU's own kernels may be the cause."""
    for a in manifest.artifacts:
        if a.repair:
            caveat = _kernel_caveat(manifest, a)
            console.print(
                f"{a.repair['plain']} failed its gate; {a.file} passes ({a.repair['summary']})"
                + (f"; {caveat}" if caveat else ""),
                highlight=False,
                soft_wrap=True,
            )


def _export(**options):
    """Export TFLite and ONNX artifacts with a parity gate against the float model."""
    from edgecls.bundle.report import parity_rows
    from edgecls.durable import Interrupted
    from edgecls.export import export_bundle

    config = ExportOptions(**options).to_config()
    try:
        result = export_bundle(config, console)
    except Interrupted as exc:
        where = config.out or "export/NAME"
        done = f"the bundle was written to {where} just before" if exc.written else None
        stopped(exc.signum, done or f"no bundle was written; {where} is as it was")
    m = result.manifest
    _parity_table(parity_rows(m.artifacts), f"{result.out} (parity on {m.parity.n} images)")
    console.print(f"bundle: {result.out}  (manifest.json, parity.md, labels.txt)")
    _print_repairs(m)
    if not result.passed:
        failed = [a for a in m.artifacts if not a.passed]
        caveat = next(filter(None, (_kernel_caveat(m, a) for a in failed)), "")
        fail(
            f"parity gate failed for {', '.join(a.file for a in failed)}; see "
            f"{result.out / 'parity.md'}" + (f"; {caveat}" if caveat else ""),
            code=1,
        )


command(name="export")(with_signature(_export, table_parameters(ExportOptions)))


@command()
def parity(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    data: Path = typer.Option(
        ...,
        help="labelled images: DIR/<class>/* or a split layout; an anomaly bundle's: DIR/ok/* "
        "(or good/) and every other image under DIR a defect",
    ),
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
    from edgecls.bundle.signing import SIGNATURE
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
        if (Path(bundle) / SIGNATURE).is_file():  # the record changed signed files
            err.print(
                f"warning: {bundle} was signed; the record changed it: sign it again "
                "(`edgecls sign`) or boards with --trust refuse it",
                highlight=False,
            )
    if not report.passed:
        fail("parity gate failed on this data", code=1)
