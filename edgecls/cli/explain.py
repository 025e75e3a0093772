"""`edgecls explain`: SHAP reports of the float model."""

from __future__ import annotations

from pathlib import Path

import typer

from edgecls.cli.common import command, console, err
from edgecls.explain.methods import EXPLAINERS


@command()
def explain(
    run: Path = typer.Argument(..., help="run folder (or a .keras file with labels.txt)"),
    images: list[str] = typer.Option(
        ..., "--images", help="image, folder or glob; repeat the option for more"
    ),
    method: str = typer.Option("gradient", help=f"attribution method: {EXPLAINERS.choices()}"),
    background: int = typer.Option(50, help="background images from the run's training split"),
    max_evals: int = typer.Option(
        500, help="model evaluations (partition) or samples (gradient) per image"
    ),
    top_k: int = typer.Option(2, help="heat maps for the K most likely classes"),
    out: Path | None = typer.Option(None, help="report folder; default reports/<run name>"),
    seed: int = typer.Option(0),
):
    """SHAP report of the float model: heat maps, probabilities, deletion check, pointing game."""
    from edgecls.explain import ExplainConfig
    from edgecls.explain import explain as run_explain

    report = run_explain(
        ExplainConfig(run, tuple(images), out, method, background, max_evals, top_k, seed), console
    )
    s = report["summary"]
    d, pg = s["deletion"], s["pointing_game"]
    console.print(
        f"deletion check: top 10% drop {d['mean_top_drop']:+.3f} "
        f"vs random {d['mean_random_drop']:+.3f} "
        f"(top beats random on {d['top_beats_random']:.0%} of {s['n']} images)",
        highlight=False,
    )
    if pg["n"]:
        console.print(
            f"pointing game: {pg['hit_rate']:.0%} of {pg['n']} images hit the defect",
            highlight=False,
        )
    console.print(f"report: {Path(report['out']) / 'report.html'}")
    if report["skipped"]:  # listed in the report; the exit code tells a script
        n = len(report["skipped"])
        err.print(f"not explained: {n} image{'s' * (n != 1)} (listed in the report)")
        raise typer.Exit(1)
