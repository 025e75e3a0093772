"""The board: `edgecls run`, `benchmark` and `doctor`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from edgecls.cli.common import command, console, err, runtime_options


@command()
def run(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    source: str = typer.Option(
        "0", help="camera index, video file, image folder/glob, rtsp/http URL or GStreamer pipeline"
    ),
    backend: str = typer.Option("auto", help="auto, litert or onnxruntime"),
    artifact: str | None = typer.Option(None, help="run this artifact file of the bundle"),
    delegate: str = typer.Option(
        "auto", help="auto, none, xnnpack, gpu, nnapi, edgetpu or PATH.so"
    ),
    threads: int | None = typer.Option(None, help="inference threads; default all cores"),
    providers: str | None = typer.Option(None, help="ONNX Runtime providers, comma-separated"),
    trt_cache: Path | None = typer.Option(None, help="TensorRT engine cache folder"),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT fp16 kernels"),
    strict: bool = typer.Option(False, help="a delegate/provider that cannot load is an error"),
    allow_failed: bool = typer.Option(False, help="run artifacts that failed their parity gate"),
    width: int | None = typer.Option(None, help="camera capture width"),
    height: int | None = typer.Option(None, help="camera capture height"),
    fps: int | None = typer.Option(None, help="camera capture FPS"),
    headless: bool = typer.Option(False, help="no window (boards without a display)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per classified frame"),
    min_confidence: float = typer.Option(0.0, help="below this, a frame is 'uncertain'"),
    every: int = typer.Option(1, help="classify every Nth frame"),
    save_dir: Path | None = typer.Option(None, help="save classified frames here"),
    save_labels: str | None = typer.Option(
        None, help="only frames of these labels, comma-separated"
    ),
    record: Path | None = typer.Option(None, help="write an annotated video (mp4)"),
    max_frames: int | None = typer.Option(None, help="stop after N classified frames"),
):
    """Classify frames from a camera, video, stream or folder with a bundle's artifact."""
    from edgecls.runtime.loop import RunConfig
    from edgecls.runtime.loop import run as run_loop
    from edgecls.runtime.sources import CaptureSettings

    config = RunConfig(
        bundle=bundle,
        source=source,
        backend=backend,
        artifact=artifact,
        runtime=runtime_options(threads, delegate, providers, strict, trt_cache, fp16),
        capture=CaptureSettings(width, height, fps),
        allow_failed=allow_failed,
        headless=headless,
        json=as_json,
        min_confidence=min_confidence,
        every=every,
        save_dir=save_dir,
        save_labels=tuple(s.strip() for s in save_labels.split(",")) if save_labels else (),
        record=record,
        max_frames=max_frames,
    )
    run_loop(config, log=lambda msg: err.print(msg, markup=False, highlight=False))


@command()
def benchmark(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    data: Path | None = typer.Option(None, help="labelled images: adds accuracy per artifact"),
    runs: int = typer.Option(50, min=1, help="timed runs per artifact after warm-up"),
    threads: int | None = typer.Option(None, help="inference threads; default all cores"),
    delegate: str = typer.Option("auto", help="LiteRT delegate"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Size, load time, latency p50/p90/p99 and FPS of every artifact, side by side."""
    from edgecls.runtime.benchmark import benchmark_bundle

    options = runtime_options(threads, delegate, None, False, None, False)
    report = benchmark_bundle(bundle, data, runs=runs, options=options)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{bundle}: {runs} runs, {report['threads']} threads")
    cols = ["artifact", "precision", "size", "load ms", "p50 ms", "p90 ms", "p99 ms", "FPS"]
    cols += ["accuracy"] if data else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("artifact", "precision") else "right")
    for r in report["artifacts"]:
        row = [
            r["file"],
            r["precision"],
            f"{r['bytes'] / 1024:,.0f} KiB",
            f"{r['load_ms']:.1f}",
            f"{r['p50_ms']:.3f}",
            f"{r['p90_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['fps']:.1f}",
        ]
        table.add_row(*row, *([f"{r['accuracy']:.4f}"] if data else []))
    console.print(table)
    for r in report["artifacts"]:
        for w in r["warnings"]:
            err.print(f"warning: {r['file']}: {w}", markup=False, highlight=False)


@command()
def doctor(as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Python, CPU, board, runtimes, delegates, ONNX Runtime providers and cameras here."""
    from edgecls.runtime.doctor import doctor as probe

    report = probe()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v if v else '-'}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        console.print(f"{key:>22}: {value}", highlight=False, markup=False)
