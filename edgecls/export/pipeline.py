"""`edgecls export`: TFLite and ONNX artifacts, each proven against the float Keras model.

The bundle is assembled in a temporary folder beside its destination and renamed into place, so
an interrupted export never leaves a bundle that looks whole (see export/bundle_dir.py); that
folder and the converters' scratch folder (`/tmp/edgecls-export-PID-*`) are removed on every way
out the process survives, a stop signal included, and by the next export after one it did not.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from edgecls import __version__
from edgecls.bundle.anomaly import AnomalySpec, margins
from edgecls.bundle.backends import HEADS, load_predictor
from edgecls.bundle.drift import reference_stats
from edgecls.bundle.folder import sha256
from edgecls.bundle.formats import MIXED, artifact_file
from edgecls.bundle.labels import check_outputs
from edgecls.bundle.manifest import (
    SCHEMA_VERSION,
    Artifact,
    Calibration,
    Manifest,
    ParityFigures,
    ParityRecord,
    SourceModel,
    TensorIO,
    embedded_metadata,
)
from edgecls.bundle.parity import compare
from edgecls.bundle.preprocess import InputSpec, is_image_file
from edgecls.bundle.report import save_bundle_files
from edgecls.bundle.signing import check_key, sign_bundle
from edgecls.durable import StopSignals, scratch_folder, staged_folder, write_text_atomic
from edgecls.errors import EdgeclsError
from edgecls.evaluate import LabelledModel
from edgecls.export.bundle_dir import check_destination
from edgecls.export.calibration import (
    MIN_RECOMMENDED,
    balanced_sample,
    load_calibration,
    round_robin,
)
from edgecls.export.config import ExportConfig
from edgecls.export.formats import ArtifactFormat, planned
from edgecls.export.mixed import MIXED_FILES
from edgecls.folders import load_eval_split
from edgecls.runs import RunSource, resolve_source, run_split

DEFAULT_CALIBRATION = Path("calibration_data")


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    warnings: list[str]

    @property
    def passed(self) -> bool:
        """Every artifact passed, or a failed int8 has a passing int8-mixed repaired from it."""
        return self.manifest.gates_held({a.file: a.passed for a in self.manifest.artifacts})


@dataclass
class EvalSet:
    """The labelled images every artifact is checked on, and the float model's answers."""

    images: np.ndarray
    y_true: np.ndarray
    where: str
    reference: np.ndarray
    scores: np.ndarray | None = None  # an anomaly model's: score - threshold, per image

    def figures(self, predictor, precision: str, thresholds) -> ParityFigures:
        """One artifact's parity figures on these images (an anomaly one's with its scores)."""
        raw = predictor.outputs(self.images)
        probs = HEADS[predictor.values](raw)
        scores = None if self.scores is None else (self.scores, margins(raw))
        return compare(self.reference, probs, self.y_true, precision, thresholds, scores)


def _calibration(config: ExportConfig, source: RunSource, spec: InputSpec):
    warnings = []
    if config.calibration is not None:
        paths = balanced_sample(config.calibration, config.calibration_size, config.seed)
        where = str(config.calibration)
    elif DEFAULT_CALIBRATION.is_dir() and any(map(is_image_file, DEFAULT_CALIBRATION.rglob("*"))):
        paths = balanced_sample(DEFAULT_CALIBRATION, config.calibration_size, config.seed)
        where = str(DEFAULT_CALIBRATION)
    else:
        split, where = run_split(source, "train")
        by_class: dict[int, list[Path]] = {}
        for p, y in zip(split.paths, split.labels, strict=True):
            by_class.setdefault(y, []).append(p)
        paths = round_robin(by_class, config.calibration_size, config.seed)
    images, skipped = load_calibration(paths, spec)
    if source.task == "anomaly":  # int8 ranges must hold a defect's scores, not just good ones
        from edgecls.anomaly.synthetic import with_defects

        images = with_defects(images, config.seed)
        where += ", every other image with a synthetic defect"
    if skipped:
        warnings.append(f"calibration: skipped {len(skipped)} unreadable files (e.g. {skipped[0]})")
    if len(images) < MIN_RECOMMENDED:
        warnings.append(
            f"calibration: only {len(images)} images (< {MIN_RECOMMENDED}); int8 ranges measured "
            "on few images clip what they did not see, so accuracy on the device can drop"
        )
    return images, where, warnings


def _eval_set(config: ExportConfig, source: RunSource, spec: InputSpec, reference, console):
    if config.eval_data is not None:
        split, skipped = load_eval_split(config.eval_data, source.labels)
        where = str(config.eval_data)
        for path, why in skipped:
            console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True)
    else:
        split, where = run_split(source, "test")
    if len(split) == 0:
        raise EdgeclsError(f"{where}: no labelled images to check parity on")
    images = spec.load_batch(split.paths)
    raw = reference.outputs(images)
    scores = margins(raw) if source.task == "anomaly" else None
    return EvalSet(images, np.asarray(split.labels), where, HEADS[reference.values](raw), scores)


def _artifact(a, ctx, folder: Path, evalset: EvalSet, config: ExportConfig, meta: dict, console):
    """Convert one artifact, stamp it with its metadata, and check it against the float model."""
    from edgecls.export.metadata import embed_metadata

    path = folder / a.file
    with console.status(f"converting {a.format} {a.precision}"):
        t0 = time.perf_counter()
        a.convert(ctx, path)
        embed_metadata(path, meta)
        seconds = time.perf_counter() - t0
        predictor = load_predictor(path)
        figures = evalset.figures(predictor, a.precision, config.thresholds)
    return Artifact(
        file=a.file,
        format=a.format,
        precision=a.precision,
        bytes=path.stat().st_size,
        sha256=sha256(path),
        input=TensorIO(**predictor.io["input"]),
        output=TensorIO(**predictor.io["output"]),
        parity=figures,
        convert_seconds=round(seconds, 2),
    )


def _int8_checks(artifacts, ctx, folder: Path, evalset, config, meta, console) -> list:
    """Per-layer error of every int8 artifact (its worst layers in the manifest, all of them in
    layer_errors.json), and for a failed one the repair search (export/mixed.py): a passing
    `model_int8_mixed.*` joins the bundle, the failed plain int8 stays as the record."""
    from edgecls.bundle.manifest import LayerErrorRow
    from edgecls.export.mixed import layer_errors

    out, tables = [], {}
    for a in artifacts:
        if a.precision != "int8":
            out.append(a)
            continue
        with console.status(f"per-layer error of {a.file}"):
            report = layer_errors(a.format, ctx, folder / a.file)
        tables[a.file] = report.to_dict()
        worst = tuple(
            LayerErrorRow(x.tensor, x.op, round(x.error, 4), round(x.rmse_scale, 3))
            for x in report.worst(10)
        )
        a = replace(a, worst_layers=worst)
        out.append(a)
        if not a.passed and config.repair.enabled:
            mixed = _repaired(a, report, ctx, folder, evalset, config, meta, console)
            out += [mixed] if mixed else []
    if tables:
        write_text_atomic(folder / "layer_errors.json", json.dumps(tables, indent=2) + "\n")
    return out


def _repaired(plain, report, ctx, folder: Path, evalset, config, meta, console):
    """The int8-mixed artifact of a failed int8 one, with what was done and what it costs; None
    when the search found nothing that passes."""
    from edgecls.bundle.latency import median_latencies
    from edgecls.export.mixed import repair

    def evaluate(path):
        return evalset.figures(load_predictor(path), "int8", config.thresholds)

    file = MIXED_FILES[plain.format]
    with console.status(f"{plain.file} failed its gate: searching for a repair"):
        fixed = (folder / plain.file, plain.parity, report)
        result = repair(plain.format, ctx, fixed, evaluate, folder / file, config.repair)
    if not result.passed:
        tries = "; ".join(f"{t.changes}: agreement {t.agreement:.3f}" for t in result.attempts)
        console.print(
            f"[yellow]warning:[/] {plain.file}: no repair passed its gate "
            f"({'tried ' + tries if tries else 'nothing to try'})",
            highlight=False,
            soft_wrap=True,
        )
        return None
    done = ArtifactFormat(plain.format, MIXED, file, lambda ctx, path: None)
    artifact = _artifact(done, ctx, folder, evalset, config, meta, console)
    float32 = artifact_file(plain.format, "float32")
    files = {f: folder / f for f in (float32, plain.file, file)}
    record = result.to_dict() | {"plain": plain.file, "latency_ms": median_latencies(files)}
    return replace(artifact, repair=record, convert_seconds=round(result.seconds, 2))


def _anomaly_spec(source: RunSource) -> AnomalySpec | None:
    """An anomaly run's threshold and map, as training set them (config.json)."""
    cfg = source.config
    if source.task != "anomaly":
        return None
    if cfg.threshold is None or cfg.map_size is None:
        raise EdgeclsError(
            f"{source.model_path.parent / 'config.json'}: an anomaly run without its threshold "
            "(interrupted training?); train it again"
        )
    return AnomalySpec(cfg.threshold, tuple(cfg.map_size), cfg.max_false_reject or 0.0)


def _manifest(out, source, spec, calibration, evalset, config, artifacts, anomaly) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        edgecls_version=__version__,
        name=out.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_model=SourceModel(str(source.model_path), sha256(source.model_path)),
        labels=tuple(source.labels),
        input=spec,
        parity=ParityRecord(
            reference="float Keras model",
            data=evalset.where,
            n=len(evalset.y_true),
            reference_accuracy=float((evalset.reference.argmax(1) == evalset.y_true).mean()),
            thresholds=config.thresholds,
            checked_on=(platform.machine(),),
        ),
        artifacts=tuple(artifacts),
        calibration=calibration,
        # what the device's drift monitor compares the camera's frames with
        drift_reference=reference_stats(evalset.images, evalset.reference, source.labels),
        task="anomaly" if anomaly else "classify",
        anomaly=anomaly,
    )


def export_bundle(config: ExportConfig, console: Console | None = None) -> ExportResult:
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) ends the export with `Interrupted`: the bundle at
    --out stays as it was, the staging and scratch folders are removed."""
    with StopSignals():
        return _export(config, console or Console())


def _champion_check(config: ExportConfig, candidate, console: Console) -> None:
    """The candidate against --champion on --holdout (edgecls/compare.py: champion_gate)."""
    from edgecls.compare import champion_gate

    with console.status(f"comparing with the champion {config.champion}"):
        cmp = champion_gate(candidate, config.champion, config.holdout, config.champion_margin)
    console.print(
        f"champion check on {config.holdout} ({len(cmp.truth)} images): this model "
        f"{100 * cmp.accuracy_b:.1f}%, champion {100 * cmp.accuracy_a:.1f}% "
        f"({cmp.delta_points:+.1f} points, McNemar p={cmp.p_value:.3g}): passes",
        highlight=False,
        soft_wrap=True,
    )


def _export(config: ExportConfig, console: Console) -> ExportResult:
    from edgecls.export.context import ExportContext, logits_model
    from edgecls.keras_predictor import KerasPredictor, load_keras_model

    source = resolve_source(config.source, config.labels)
    anomaly = _anomaly_spec(source)  # before any work: a run that cannot make a whole bundle
    config = replace(config, thresholds=config.gates(source.task))
    if config.sign_key is not None:
        check_key(config.sign_key, "--sign-key")
    out = Path(config.out or Path("export") / source.name)
    check_destination(out, source.model_path)
    model = load_keras_model(source.model_path)
    reference = KerasPredictor.from_model(model)
    check_outputs(reference, source.labels, source.model_path)
    spec = source.input_spec(reference.input_size)
    if config.champion is not None:  # before any export work: a worse model writes nothing
        candidate = LabelledModel(source.model_path, reference, source.labels, spec)
        _champion_check(config, candidate, console)
    evalset = _eval_set(config, source, spec, reference, console)

    plan = planned(config.formats, tuple(dict.fromkeys(("float32", *config.precisions))))
    calibration, calib, warnings = np.zeros((0, *spec.size, 3), np.uint8), None, []
    if any(a.needs_calibration for a in plan):
        calibration, where, warnings = _calibration(config, source, spec)
        calib = Calibration(where, len(calibration), config.onnx_int8)
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)

    meta = embedded_metadata(source.labels, spec)
    with scratch_folder("export") as workdir, staged_folder(out, "the bundle") as folder:
        ctx = ExportContext(
            logits_model(model), spec.size, calibration, config.io, config.onnx_int8, workdir
        )
        artifacts = [_artifact(a, ctx, folder, evalset, config, meta, console) for a in plan]
        artifacts = _int8_checks(artifacts, ctx, folder, evalset, config, meta, console)
        manifest = _manifest(out, source, spec, calib, evalset, config, artifacts, anomaly)
        write_text_atomic(folder / "labels.txt", "\n".join(source.labels) + "\n")
        save_bundle_files(folder, manifest)
        if config.sign_key is not None:  # published signed, or not at all
            sign_bundle(folder, config.sign_key, "--sign-key")
    return ExportResult(out, manifest, warnings)
