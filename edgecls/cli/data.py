"""`edgecls data`: sample datasets and calibration sets."""

from __future__ import annotations

from pathlib import Path

import typer

from edgecls.cli.common import command, console, data_app, err
from edgecls.samples import SAMPLES


@command(data_app, "sample")
def data_sample(
    name: str = typer.Argument(..., help=f"one of: {SAMPLES.choices()}"),
    out: Path = typer.Option(..., "--out", help="folder to write the dataset to"),
    n_train: int = typer.Option(400, help="training images per class"),
    n_test: int = typer.Option(60, help="test images per class"),
    size: int = typer.Option(192, help="image side in pixels"),
    seed: int = typer.Option(0),
):
    """Write a deterministic synthetic dataset (DIR/{train,test}/<class>/*)."""
    from edgecls.samples import SampleSpec, write_sample

    counts = write_sample(name, out, SampleSpec(n_train, n_test, size, seed))
    console.print(
        f"wrote {sum(counts.values())} images to {out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        highlight=False,
    )


@command(data_app, "calibration")
def data_calibration(
    from_: Path = typer.Option(
        ..., "--from", help="labelled images (class folders or a split layout)"
    ),
    out: Path = typer.Option(Path("calibration_data"), help="where to copy the sample"),
    n: int = typer.Option(200, "--size", min=1, help="number of images"),
    seed: int = typer.Option(0),
):
    """Pick a representative, class-balanced calibration set for int8 export."""
    from edgecls.export.calibration import MIN_RECOMMENDED, write_calibration_set

    written = write_calibration_set(from_, out, n, seed)
    classes = sorted({p.relative_to(out).parts[0] for p in written if p.parent != out})
    console.print(
        f"copied {len(written)} images from {len(classes)} classes to {out}", highlight=False
    )
    if len(written) < MIN_RECOMMENDED:
        err.print(f"warning: only {len(written)} images; int8 calibration wants {MIN_RECOMMENDED}+")
