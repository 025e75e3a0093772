"""`edgecls data`: sample datasets and calibration sets."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from edgecls.cli.common import command, console, data_app, err, table_parameters, with_signature
from edgecls.samples import SAMPLES, SampleSpec


def _sample(name: str, out: Path, **spec):
    """Write a deterministic synthetic dataset (DIR/{train,test}/<class>/*)."""
    from edgecls.samples import write_sample

    counts = write_sample(name, out, SampleSpec(**spec))
    console.print(
        f"wrote {sum(counts.values())} images to {out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        highlight=False,
    )


_KW = inspect.Parameter.KEYWORD_ONLY
_SAMPLE_PARAMETERS = [
    inspect.Parameter(
        "name",
        _KW,
        default=typer.Argument(..., help=f"one of: {SAMPLES.choices()}"),
        annotation=str,
    ),
    inspect.Parameter(
        "out",
        _KW,
        default=typer.Option(..., "--out", help="folder to write the dataset to"),
        annotation=Path,
    ),
    *table_parameters(SampleSpec),
]
command(data_app, "sample")(with_signature(_sample, _SAMPLE_PARAMETERS))


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


@command(data_app, "pull")
def data_pull(
    url: str = typer.Argument(..., help="the board's --http address, e.g. http://board:8080"),
    out: Path = typer.Option(..., "--out", help="training folder to copy into (DIR/<class>/)"),
    token: str = typer.Option(
        None, envvar="EDGECLS_HTTP_TOKEN", help="the board's --http-token (or $EDGECLS_HTTP_TOKEN)"
    ),
    user: str = typer.Option(None, help="the board's --http-user USER:PASSWORD"),
    all_: bool = typer.Option(False, "--all", help="also frames nobody labelled yet"),
):
    """Copy the frames labelled on a board into a training folder: resumable, sha256-checked."""
    from rich.progress import Progress

    from edgecls.pull import PullOptions, pull

    options = PullOptions(url, out, token=token, user=user, unlabelled=all_)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("pulling", total=None)
        result = pull(options, lambda n, total: bar.update(task, completed=n, total=total))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.classes.items())) or "none"
    console.print(
        f"{out}: {result.fetched} fetched ({result.resumed} resumed, {result.bytes} bytes), "
        f"{result.present} already here, {result.moved} moved to a new label; {counts}",
        highlight=False,
    )
