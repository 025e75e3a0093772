"""`edgecls export`: TFLite and ONNX artifacts, each proven against the float Keras model.

The bundle is assembled in a temporary folder beside its destination and renamed into place, so
an interrupted export never leaves a bundle that looks whole.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from edgecls import __version__
from edgecls.errors import EdgeclsError
from edgecls.export.calibration import (
    MIN_RECOMMENDED,
    balanced_sample,
    load_calibration,
    round_robin,
)
from edgecls.export.context import ONNX_INT8
from edgecls.export.formats import FORMATS, PRECISIONS, planned
from edgecls.folders import Split, SplitConfig, load_eval_split, load_folder_dataset
from edgecls.runtime.backends import check_outputs, load_labels, load_predictor
from edgecls.runtime.bundle import SCHEMA_VERSION, sha256
from edgecls.runtime.parity import ParityThresholds, compare, manifest_files
from edgecls.runtime.preprocess import InputSpec, is_image_file, load_batch

DEFAULT_CALIBRATION = Path("calibration_data")


@dataclass(frozen=True)
class ExportConfig:
    source: Path  # a run folder, or a .keras file with labels.txt beside it (or `labels`)
    out: Path | None = None  # default export/<name>
    formats: tuple[str, ...] = FORMATS
    precisions: tuple[str, ...] = ("float32",)
    io: str = "uint8"
    onnx_int8: str = "u8u8"  # see export.context.ONNX_INT8 for why u8u8
    calibration: Path | None = None
    calibration_size: int = 200
    eval_data: Path | None = None
    labels: Path | None = None
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    seed: int = 0

    def __post_init__(self):
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise EdgeclsError(f"--format {','.join(bad)}: choose from {', '.join(FORMATS)}")
        if self.io not in ("uint8", "int8", "float32"):
            raise EdgeclsError(f"--io {self.io}: choose uint8, int8 or float32")
        if self.onnx_int8 not in ONNX_INT8:
            raise EdgeclsError(f"--onnx-int8 {self.onnx_int8}: choose {' or '.join(ONNX_INT8)}")
        if self.calibration_size < 1:
            raise EdgeclsError("--calibration-size must be at least 1")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise EdgeclsError(f"unknown precision {unknown}")


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    warnings: list[str]

    @property
    def passed(self) -> bool:
        return all(a["parity"]["passed"] for a in self.manifest["artifacts"])


@dataclass
class Source:
    model_path: Path
    labels: list[str]
    name: str
    run_config: dict | None


def resolve_source(path: Path, labels: Path | None) -> Source:
    path = Path(path)
    if path.is_dir():
        model = path / "model.keras"
        if not model.is_file():
            raise EdgeclsError(
                f"{path}: run folder has no model.keras; train first or pass the model file"
            )
        cfg = path / "config.json"
        return Source(
            model,
            load_labels(labels or path / "labels.txt"),
            path.name,
            json.loads(cfg.read_text()) if cfg.is_file() else None,
        )
    if not path.is_file():
        raise EdgeclsError(f"{path}: no such run folder or model file")
    if path.suffix != ".keras":
        raise EdgeclsError(f"{path}: export takes a run folder or a .keras model")
    labels = labels or path.parent / "labels.txt"
    if not labels.is_file():
        raise EdgeclsError(f"no labels.txt beside {path}: pass --labels FILE")
    cfg = path.parent / "config.json"
    return Source(
        path,
        load_labels(labels),
        path.parent.name if path.stem == "model" else path.stem,
        json.loads(cfg.read_text()) if cfg.is_file() else None,
    )


def run_split(source: Source, name: str) -> tuple[Split, str]:
    """A split of the dataset the run was trained on, rebuilt from its config.json."""
    cfg = source.run_config
    if not cfg or not Path(cfg.get("data", "")).is_dir():
        raise EdgeclsError(
            f"{source.model_path}: the training data of this model is not known or not "
            f"here; pass --eval-data DIR (and --calibration DIR for int8)"
        )
    ds = load_folder_dataset(Path(cfg["data"]), SplitConfig(**cfg.get("split", {})))
    if ds.classes != source.labels:
        raise EdgeclsError(f"{cfg['data']}: classes {ds.classes} differ from the model's labels")
    split = ds.splits.get(name) or ds.splits["val"]
    return split, f"{cfg['data']} ({name} split)"


def _calibration(config: ExportConfig, source: Source, size) -> tuple[np.ndarray, str, list[str]]:
    warnings = []
    if config.calibration is not None:
        paths, where = (
            balanced_sample(config.calibration, config.calibration_size, config.seed),
            str(config.calibration),
        )
    elif DEFAULT_CALIBRATION.is_dir() and any(map(is_image_file, DEFAULT_CALIBRATION.rglob("*"))):
        paths = balanced_sample(DEFAULT_CALIBRATION, config.calibration_size, config.seed)
        where = str(DEFAULT_CALIBRATION)
    else:
        split, where = run_split(source, "train")
        by_class: dict[int, list[Path]] = {}
        for p, y in zip(split.paths, split.labels, strict=True):
            by_class.setdefault(y, []).append(p)
        paths = round_robin(by_class, config.calibration_size, config.seed)
    images, skipped = load_calibration(paths, size)
    if skipped:
        warnings.append(f"calibration: skipped {len(skipped)} unreadable files (e.g. {skipped[0]})")
    if len(images) < MIN_RECOMMENDED:
        warnings.append(
            f"calibration: only {len(images)} images (< {MIN_RECOMMENDED}); int8 ranges measured "
            "on few images clip what they did not see, so accuracy on the device can drop"
        )
    return images, where, warnings


def export_bundle(config: ExportConfig, console: Console | None = None) -> ExportResult:
    console = console or Console()
    from edgecls.keras_predictor import KerasPredictor, load_keras_model

    source = resolve_source(config.source, config.labels)
    model = load_keras_model(source.model_path)
    reference = KerasPredictor.from_model(model)
    size = reference.input_size
    check_outputs(reference, source.labels, source.model_path)

    if config.eval_data is not None:
        eval_split, skipped = load_eval_split(config.eval_data, source.labels)
        eval_where = str(config.eval_data)
        for path, why in skipped:
            console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True)
    else:
        eval_split, eval_where = run_split(source, "test")
    if len(eval_split) == 0:
        raise EdgeclsError(f"{eval_where}: no labelled images to check parity on")
    eval_images = load_batch(eval_split.paths, size)
    y_true = np.asarray(eval_split.labels)
    ref_probs = reference.predict(eval_images)

    artifacts = planned(config.formats, tuple(dict.fromkeys(("float32", *config.precisions))))
    warnings: list[str] = []
    calibration, calib_where = np.zeros((0, *size, 3), np.uint8), None
    if any(a.needs_calibration for a in artifacts):
        calibration, calib_where, w = _calibration(config, source, size)
        warnings += w
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)

    from edgecls.export.context import ExportContext, logits_model

    out = Path(config.out or Path("export") / source.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ctx = ExportContext(logits_model(model), size, calibration, config.io, config.onnx_int8)
    entries = []
    try:
        for a in artifacts:
            with console.status(f"converting {a.format} {a.precision}"):
                t0 = time.perf_counter()
                a.convert(ctx, tmp / a.file)
                seconds = time.perf_counter() - t0
                predictor = load_predictor(tmp / a.file)
                probs = predictor.predict(eval_images)
            result = compare(ref_probs, probs, y_true, a.precision, config.thresholds)
            entries.append(
                {
                    "file": a.file,
                    "format": a.format,
                    "precision": a.precision,
                    "bytes": (tmp / a.file).stat().st_size,
                    "sha256": sha256(tmp / a.file),
                    **predictor.io,
                    "convert_seconds": round(seconds, 2),
                    "parity": result,
                }
            )
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgecls_version": __version__,
            "name": out.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_model": {"file": str(source.model_path), "sha256": sha256(source.model_path)},
            "labels": source.labels,
            "input": InputSpec(*size).to_dict(),
            "calibration": (
                {"source": calib_where, "n": len(calibration), "onnx_int8": config.onnx_int8}
                if calib_where
                else None
            ),
            "parity": {
                "reference": "float Keras model",
                "data": eval_where,
                "n": len(y_true),
                "reference_accuracy": float((ref_probs.argmax(1) == y_true).mean()),
                "thresholds": config.thresholds.to_dict(),
                "checked_on": [platform.machine()],
            },
            "artifacts": entries,
        }
        (tmp / "labels.txt").write_text("\n".join(source.labels) + "\n")
        for name, text in manifest_files(manifest).items():
            (tmp / name).write_text(text)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    return ExportResult(out, manifest, warnings)


def _replace_dir(new: Path, dest: Path) -> None:
    """Put a finished folder in place; an older bundle there is swapped out, then removed."""
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
