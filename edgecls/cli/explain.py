"""`edgecls explain`: SHAP reports of the float model or of a bundle's artifact; an anomaly model's
own maps with their checks."""

from __future__ import annotations

from pathlib import Path

import typer

from edgecls.cli.common import command, console, err
from edgecls.explain.methods import EXPLAINERS, model_agnostic


def _evals_help() -> str:
    defaults = ", ".join(f"{name} {m.evals}" for name, m in EXPLAINERS.items())
    return f"model evaluations (samples) per image; default per method: {defaults}"


# SHAP's settings: left out, the pipeline's defaults (SHAP_DEFAULTS); an anomaly model refuses
# every one given, with --method and --compare
_HELP = {
    "compare_images": "--compare: at most this many, most apart first (default 8)",
    "segments": "kernel: about this many SLIC superpixels per image (default 50)",
    "background": "gradient: background images from the training split (default 50)",
    "top_k": "heat maps for the K most likely classes (default 2)",
}


@command()
def explain(
    run: Path = typer.Argument(
        ..., help="run folder (or a .keras file with labels.txt), or a bundle folder"
    ),
    images: list[str] = typer.Option(
        ..., "--images", help="image, folder or glob; repeat the option for more"
    ),
    method: str | None = typer.Option(
        None,
        help=f"attribution method: {EXPLAINERS.choices()} (default: gradient for a run, "
        f"kernel for a bundle, which takes {' or '.join(model_agnostic())})",
    ),
    artifact: str | None = typer.Option(
        None, help="bundle: the artifact file to explain (default: its int8 one)"
    ),
    compare: bool = typer.Option(
        False,
        "--compare",
        help="bundle: the images where the artifact and the float model disagree, both "
        "explained side by side, with the layers its per-layer error table names",
    ),
    compare_images: int | None = typer.Option(None, help=_HELP["compare_images"]),
    segments: int | None = typer.Option(None, help=_HELP["segments"]),
    background: int | None = typer.Option(None, help=_HELP["background"]),
    max_evals: int | None = typer.Option(None, help=_evals_help()),
    top_k: int | None = typer.Option(None, help=_HELP["top_k"]),
    out: Path | None = typer.Option(
        None, help="report folder; default reports/<run name> or reports/<bundle>-<artifact>"
    ),
    seed: int = typer.Option(0),
):
    """SHAP report of the float model or a bundle artifact: heat maps, probabilities, deletion
    check, pointing game; --compare holds an artifact against the float model. An anomaly run or
    bundle gets its own anomaly maps instead, with the same checks (SHAP's options refused)."""
    from edgecls.explain import ExplainConfig
    from edgecls.explain import explain as run_explain

    report = run_explain(
        ExplainConfig(
            run=run,
            images=tuple(images),
            out=out,
            method=method,
            background=background,
            max_evals=max_evals,
            top_k=top_k,
            seed=seed,
            segments=segments,
            artifact=artifact,
            compare=compare,
            compare_images=compare_images,
        ),
        console,
    )
    _print_summary(report["summary"])
    console.print(f"report: {Path(report['out']) / 'report.html'}")
    if report["skipped"]:  # listed in the report; the exit code tells a script
        n = len(report["skipped"])
        err.print(f"not explained: {n} image{'s' * (n != 1)} (listed in the report)")
        raise typer.Exit(1)


def _print_summary(s: dict) -> None:
    c, d, pg = s.get("compare"), s["deletion"], s["pointing_game"]
    if s.get("task") == "anomaly":
        verdicts = ", ".join(f"{n} {label}" for label, n in s["verdicts"].items())
        console.print(f"anomaly maps: {verdicts} (threshold {s['threshold']:.3f})", highlight=False)
    if c is not None:
        shown = (
            f"disagree on {c['disagree']}, {c['shown']} shown"
            if c["disagree"]
            else "disagree on none: no image to show"
        )
        console.print(
            f"{Path(c['artifact']).name} against the float model on {c['checked']} images: "
            f"{shown} (max |Δprob| {c['max_abs_prob_diff']:.3f})",
            highlight=False,
        )
    if d is not None:
        console.print(
            f"deletion check: top 10% drop {d['mean_top_drop']:+.3f} "
            f"vs random {d['mean_random_drop']:+.3f} "
            f"(top beats random on {d['top_beats_random']:.0%} of {s['n']} images; "
            f"{s['seconds_per_image']:.2f} s per image)",
            highlight=False,
        )
    if pg["n"]:
        console.print(
            f"pointing game: {pg['hit_rate']:.0%} of {pg['n']} images hit the defect",
            highlight=False,
        )
