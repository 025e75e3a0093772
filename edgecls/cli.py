"""The `edgecls` command: parse, call one library function, print. No TensorFlow at import."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgecls.errors import EdgeclsError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Image classifiers from a folder of photos to a camera on an edge board.",
)
data_app = typer.Typer(no_args_is_help=True, help="Sample data and calibration sets.")
app.add_typer(data_app, name="data")

# Logs and pipes get no terminal width; 80 columns would cut the tables' file names.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2):
    err.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(code)


def command(target=app, name: str | None = None):
    """Register a command whose user errors become one line on stderr and a non-zero exit."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except EdgeclsError as exc:
                fail(str(exc))
            except KeyboardInterrupt:
                err.print("interrupted")
                raise typer.Exit(130) from None

        return target.command(name)(wrapper)

    return deco


def _size(value: int) -> tuple[int, int]:
    if value < 16:
        raise EdgeclsError(f"--img-size {value}: must be at least 16 pixels")
    return (value, value)


# ---------------------------------------------------------------------------------------------
# data


@command(data_app, "sample")
def data_sample(
    name: str = typer.Argument(..., help="casting or insects"),
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
    n: int = typer.Option(200, "--size", help="number of images"),
    seed: int = typer.Option(0),
):
    """Pick a representative, class-balanced calibration set for int8 export."""
    from edgecls.export.calibration import MIN_RECOMMENDED, write_calibration_set

    written = write_calibration_set(from_, out, n, seed)
    classes = sorted({p.parent.name for p in written})
    console.print(
        f"copied {len(written)} images from {len(classes)} classes to {out}", highlight=False
    )
    if len(written) < MIN_RECOMMENDED:
        err.print(f"warning: only {len(written)} images; int8 calibration wants {MIN_RECOMMENDED}+")


# ---------------------------------------------------------------------------------------------
# train / evaluate / predict


DEFAULT_SAMPLE = Path("runs/data/casting-sample")


@command()
def train(
    data: Path | None = typer.Option(
        None, help="DIR/<class>/* or DIR/{train,val,test}/<class>/*; default: the casting sample"
    ),
    model: str = typer.Option("seed-cnn", help="seed-cnn, mobilenet-v2, mobilenet-v3-small"),
    img_size: int = typer.Option(96, help="square input side in pixels"),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3, help="learning rate"),
    seed: int = typer.Option(42),
    out: Path | None = typer.Option(None, help="run folder; default runs/<data>-<model>"),
    augment: bool = typer.Option(True, help="flip, rotation, zoom, contrast"),
    alpha: float = typer.Option(1.0, help="MobileNet width multiplier"),
    weights: str = typer.Option("imagenet", help="backbone weights: imagenet, none or a file"),
    fine_tune: int = typer.Option(0, help="unfreeze the top N backbone layers"),
    patience: int = typer.Option(5, help="early-stopping patience in epochs (val_loss)"),
    val_fraction: float = typer.Option(0.15),
    test_fraction: float = typer.Option(0.15),
):
    """Train a classifier and write model.keras, labels, metrics and reports to a run folder."""
    from edgecls.folders import SplitConfig
    from edgecls.train import TrainConfig, unique_run_dir
    from edgecls.train import train as run_training
    from edgecls.train.models import ModelConfig

    if data is None:
        data = DEFAULT_SAMPLE
        if not (data / "train").is_dir():
            from edgecls.samples import write_sample

            console.print(f"no --data: writing the casting sample to {data}")
            write_sample("casting", data)
    name = f"{data.resolve().name}-{model}"
    config = TrainConfig(
        data=data,
        out=out or unique_run_dir(Path("runs") / name),
        model=ModelConfig(model, _size(img_size), alpha, weights, fine_tune),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=augment,
        patience=patience,
        split=SplitConfig(val_fraction, test_fraction, seed),
    )
    result = run_training(config, console)
    _metrics_table(result.metrics, f"{result.out} (test split)")
    console.print(f"model: {result.out / 'model.keras'}")


def _metrics_table(m: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("class", "precision", "recall", "f1", "n"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, c in m["per_class"].items():
        table.add_row(
            name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])
        )
    table.add_row("[bold]accuracy[/]", "", "", f"[bold]{m['accuracy']:.3f}[/]", str(m["n"]))
    console.print(table)


def _labels_for(model: Path, labels: Path | None) -> list[str]:
    from edgecls.runtime.backends import load_labels

    if labels is None:
        labels = model.parent / "labels.txt"
        if not labels.is_file():
            raise EdgeclsError(f"no labels.txt beside {model}: pass --labels FILE")
    return load_labels(labels)


@command()
def evaluate(
    model: Path = typer.Argument(..., help=".keras, .tflite or .onnx"),
    data: Path = typer.Option(..., help="DIR/<class>/* (or a split layout: its test/ is used)"),
    out: Path | None = typer.Option(None, help="report folder; default <model folder>/eval"),
    labels: Path | None = typer.Option(None, help="labels.txt; default beside the model"),
):
    """Metrics, classification report and confusion matrix of any model on a labelled folder."""
    from edgecls.evaluate import evaluate as run_eval
    from edgecls.evaluate import write_reports
    from edgecls.folders import load_eval_split
    from edgecls.runtime.backends import check_outputs, load_predictor

    classes = _labels_for(model, labels)
    predictor = load_predictor(model)
    check_outputs(predictor, classes, model)
    split, skipped = load_eval_split(data, classes)
    for path, why in skipped:
        err.print(f"skipped {path}: {why}", markup=False)
    out = out or model.parent / "eval"
    m = write_reports(
        run_eval(predictor, split, classes), out, {"model": str(model), "data": str(data)}
    )
    _metrics_table(m, f"{model} on {data}")
    console.print(f"reports: {out}")


@command()
def predict(
    model: Path = typer.Argument(..., help=".keras, .tflite or .onnx"),
    images: list[Path] = typer.Argument(..., help="image files"),
    top_k: int = typer.Option(1, help="show the K most likely labels"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per image"),
    labels: Path | None = typer.Option(None, help="labels.txt; default beside the model"),
):
    """Label and confidence for each image."""
    from edgecls.runtime.backends import check_outputs, load_predictor
    from edgecls.runtime.preprocess import load_image

    classes = _labels_for(model, labels)
    predictor = load_predictor(model)
    check_outputs(predictor, classes, model)
    failed = 0
    for path in images:
        try:
            image = load_image(path, predictor.input_size)
        except EdgeclsError as exc:
            err.print(f"skipped {exc}", markup=False)
            failed += 1
            continue
        probs = predictor.predict(image[None])[0]
        order = probs.argsort()[::-1][: max(1, top_k)]
        top = [{"label": classes[i], "confidence": round(float(probs[i]), 6)} for i in order]
        if as_json:
            print(json.dumps({"image": str(path), **top[0], "top_k": top}))
        else:
            console.print(
                f"{path}: " + ", ".join(f"{t['label']} {t['confidence']:.3f}" for t in top),
                highlight=False,
            )
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# export / parity


def _parity_table(manifest: dict, title: str) -> None:
    table = Table(title=title)
    for col in (
        "artifact",
        "precision",
        "size",
        "accuracy",
        "drop",
        "agreement",
        "max |Δp|",
        "gate",
    ):
        table.add_column(
            col, justify="left" if col in ("artifact", "precision", "gate") else "right"
        )
    for a in manifest["artifacts"]:
        r = a["parity"]
        gate = "[green]pass[/]" if r["passed"] else "[bold red]FAIL[/] " + "; ".join(r["failures"])
        table.add_row(
            a["file"],
            a["precision"],
            f"{a['bytes'] / 1024:,.0f} KiB",
            f"{r['accuracy']:.4f}",
            f"{r['accuracy_drop']:+.2f}",
            f"{r['agreement']:.4f}",
            f"{r['max_abs_prob_diff']:.1e}",
            gate,
        )
    console.print(table)


@command()
def export(
    source: Path = typer.Argument(..., help="run folder (or a .keras file with labels.txt)"),
    out: Path | None = typer.Option(None, help="bundle folder; default export/<run name>"),
    int8: bool = typer.Option(False, "--int8", help="full-integer TFLite + static int8 ONNX (QDQ)"),
    fp16: bool = typer.Option(False, "--fp16", help="float16 TFLite and ONNX"),
    dynamic: bool = typer.Option(False, "--dynamic", help="dynamic-range TFLite"),
    format: str = typer.Option("tflite,onnx", "--format", help="comma-separated: tflite,onnx"),
    io: str = typer.Option("uint8", help="int8 TFLite input/output type: uint8, int8 or float32"),
    onnx_int8: str = typer.Option(
        "u8u8", help="int8 ONNX activations/weights: u8u8 (same bits on ARM and x86) or u8s8"
    ),
    calibration: Path | None = typer.Option(
        None, help="calibration images; default calibration_data/, else the run's training split"
    ),
    calibration_size: int = typer.Option(200, help="class-balanced calibration sample size"),
    eval_data: Path | None = typer.Option(
        None, help="labelled images for parity; default the run's test split"
    ),
    labels: Path | None = typer.Option(None, help="labels.txt for a bare .keras file"),
    max_drop: float = typer.Option(
        1.0, help="gate: most accuracy points a quantized artifact may lose"
    ),
    min_agreement: float = typer.Option(
        0.97, help="gate: least top-1 agreement with the float model"
    ),
    seed: int = typer.Option(0),
):
    """Export TFLite and ONNX artifacts with a parity gate against the float model."""
    from edgecls.export import ExportConfig, export_bundle
    from edgecls.runtime.parity import ParityThresholds

    precisions = (
        ("float32",)
        + (("float16",) if fp16 else ())
        + (("dynamic",) if dynamic else ())
        + (("int8",) if int8 else ())
    )
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
    )
    result = export_bundle(config, console)
    _parity_table(
        result.manifest, f"{result.out} (parity on {result.manifest['parity']['n']} images)"
    )
    console.print(f"bundle: {result.out}  (manifest.json, parity.md, labels.txt)")
    if not result.passed:
        failed = [a["file"] for a in result.manifest["artifacts"] if not a["parity"]["passed"]]
        fail(
            f"parity gate failed for {', '.join(failed)}; see {result.out / 'parity.md'}",
            code=1,
        )


@command()
def parity(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    data: Path = typer.Option(..., help="labelled images: DIR/<class>/* or a split layout"),
    max_drop: float | None = typer.Option(None, help="default: the bundle's threshold"),
    min_agreement: float | None = typer.Option(None, help="default: the bundle's threshold"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    delegate: str = typer.Option("auto", help="LiteRT delegate, as for `edgecls run`"),
    threads: int | None = typer.Option(None, help="inference threads; default all cores"),
    record: bool = typer.Option(
        False, "--record", help="add this check to the bundle's manifest.json and parity.md"
    ),
):
    """Re-run the parity checks of a bundle on other data, on this machine's runtimes."""
    from edgecls.runtime.parity import check_bundle, record_check

    options = _runtime_options(threads, delegate, None, False, None, False)
    report = check_bundle(
        bundle, data, max_drop=max_drop, min_agreement=min_agreement, options=options
    )
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _parity_table(
            report,
            f"{bundle} on {data} ({report['parity']['n']} images, "
            f"{report['parity']['checked_on'][0]})",
        )
    if record:
        path = record_check(bundle, report)
        (err if as_json else console).print(f"recorded in {path}", highlight=False)
    if not all(a["parity"]["passed"] for a in report["artifacts"]):
        fail("parity gate failed on this data", code=1)


# ---------------------------------------------------------------------------------------------
# device: run / benchmark / doctor


def _runtime_options(threads, delegate, providers, strict, trt_cache, fp16):
    from edgecls.runtime.backends import RuntimeOptions
    from edgecls.runtime.delegates import validate_delegate

    validate_delegate(delegate)
    if threads is not None and threads < 1:
        raise EdgeclsError("--threads must be at least 1")
    return RuntimeOptions(
        threads=threads,
        delegate=delegate,
        strict=strict,
        fp16=fp16,
        trt_cache=trt_cache,
        providers=tuple(p.strip() for p in providers.split(",")) if providers else None,
    )


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
        runtime=_runtime_options(threads, delegate, providers, strict, trt_cache, fp16),
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
    runs: int = typer.Option(50, help="timed runs per artifact after warm-up"),
    threads: int | None = typer.Option(None, help="inference threads; default all cores"),
    delegate: str = typer.Option("auto", help="LiteRT delegate"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Size, load time, latency p50/p90/p99 and FPS of every artifact, side by side."""
    from edgecls.runtime.benchmark import benchmark_bundle

    options = _runtime_options(threads, delegate, None, False, None, False)
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


# ---------------------------------------------------------------------------------------------
# explain


@command()
def explain(
    run: Path = typer.Argument(..., help="run folder (or a .keras file with labels.txt)"),
    images: list[str] = typer.Option(
        ..., "--images", help="image, folder or glob; repeat the option for more"
    ),
    method: str = typer.Option(
        "gradient", help="gradient (GradientExplainer) or partition (model-agnostic)"
    ),
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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
