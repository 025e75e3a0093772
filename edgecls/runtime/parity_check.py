"""`edgecls parity` on the board: re-run a bundle's parity with this machine's runtimes and no
TensorFlow, and record the check in the bundle."""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecls.bundle.anomaly import margins
from edgecls.bundle.backends import HEADS
from edgecls.bundle.folder import Bundle, load_bundle
from edgecls.bundle.manifest import (
    MANIFEST,
    CheckFigures,
    DeviceCheck,
    ParityFigures,
    ParityThresholds,
)
from edgecls.bundle.parity import compare
from edgecls.bundle.report import ParityRow, save_bundle_files
from edgecls.errors import EdgeclsError
from edgecls.schema import to_dict


@dataclass
class CheckReport:
    """`edgecls parity` on this machine: the figures per artifact, and its exact outputs so that
    another machine's report can be compared bit for bit."""

    bundle: Bundle
    data: str
    paths: list[Path]
    y_true: np.ndarray
    reference: str
    thresholds: ParityThresholds
    figures: dict[str, ParityFigures]
    runtimes: dict[str, str]
    outputs: dict[str, np.ndarray]
    board: str

    @property
    def passed(self) -> bool:
        return self.bundle.manifest.gates_held({f: r.passed for f, r in self.figures.items()})

    @property
    def rows(self) -> list[ParityRow]:
        return [
            ParityRow(a.file, a.precision, a.bytes, self.figures[a.file])
            for a in self.bundle.artifacts
        ]

    def device_check(self) -> DeviceCheck:
        return DeviceCheck(
            architecture=platform.machine(),
            board=self.board,
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            data=self.data,
            n=len(self.y_true),
            reference=self.reference,
            artifacts={
                file: CheckFigures(
                    f.accuracy, f.agreement, f.max_abs_prob_diff, self.runtimes[file], f.failures
                )
                for file, f in self.figures.items()
            },
        )

    def to_dict(self) -> dict:
        ref = self.outputs[self.reference]
        return {
            "name": self.bundle.manifest.name,
            "labels": self.bundle.labels,
            "paths": [str(p) for p in self.paths],
            "parity": {
                "reference": self.reference,
                "data": self.data,
                "n": len(self.y_true),
                "reference_accuracy": float((ref.argmax(1) == self.y_true).mean()),
                "thresholds": to_dict(self.thresholds),
                "checked_on": [platform.machine()],
                "board": self.board,
                "passed": self.passed,
            },
            "artifacts": [
                {
                    "file": a.file,
                    "format": a.format,
                    "precision": a.precision,
                    "parity": {
                        **to_dict(self.figures[a.file]),
                        "passed": self.figures[a.file].passed,
                    },
                    "runtime": self.runtimes[a.file],
                    "outputs": self.outputs[a.file].tolist(),  # exact: other machines compare bits
                }
                for a in self.bundle.artifacts
            ],
        }


def _predict_in_chunks(bundle: Bundle, predictors: dict, paths, chunk: int = 64) -> dict:
    """Every predictor's raw outputs on the images, decoded a chunk at a time: a board checking
    thousands of photos never holds them all in memory."""
    parts: dict[str, list[np.ndarray]] = {file: [] for file in predictors}
    for i in range(0, len(paths), chunk):
        images = bundle.input_spec.load_batch(paths[i : i + chunk])
        for file, predictor in predictors.items():
            parts[file].append(predictor.outputs(images))
    return {file: np.concatenate(p) for file, p in parts.items()}


def eval_split(bundle: Bundle, data: Path):
    """The labelled images to check a bundle on: class folders named as its labels; for an
    anomaly bundle, `ok/` or `good/` and every other image a defect."""
    from edgecls.folders import load_anomaly_eval_split, load_eval_split

    if bundle.manifest.anomaly is not None:
        return load_anomaly_eval_split(data)
    return load_eval_split(data, bundle.labels)


def check_bundle(
    bundle_dir,
    data,
    *,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    options=None,
) -> CheckReport:
    """Re-run a bundle's parity on `data` with this machine's runtimes and no TensorFlow.

    The reference is the bundle's float32 artifact (TFLite first), which export proved equal to
    the Keras model; every artifact, that one included, is compared with it.
    """
    from edgecls.runtime.doctor import board

    bundle = load_bundle(Path(bundle_dir))
    base = bundle.manifest.parity.thresholds
    thresholds = replace(
        base,
        max_drop=base.max_drop if max_drop is None else max_drop,
        min_agreement=base.min_agreement if min_agreement is None else min_agreement,
    )
    reference_artifact = bundle.float_reference()
    split, _ = eval_split(bundle, Path(data))
    if len(split) == 0:
        raise EdgeclsError(f"{data}: no labelled images")
    y_true = np.asarray(split.labels)
    predictors = {a.file: bundle.load(a, options, allow_failed=True) for a in bundle.artifacts}
    raw = _predict_in_chunks(bundle, predictors, split.paths)
    outputs = {file: HEADS[p.values](raw[file]) for file, p in predictors.items()}
    reference = outputs[reference_artifact.file]
    scores = {file: margins(r) for file, r in raw.items()} if bundle.manifest.anomaly else None
    return CheckReport(
        bundle=bundle,
        data=str(data),
        paths=list(split.paths),
        y_true=y_true,
        reference=reference_artifact.file,
        thresholds=thresholds,
        figures={
            a.file: compare(
                reference,
                outputs[a.file],
                y_true,
                a.precision,
                thresholds,
                scores and (scores[reference_artifact.file], scores[a.file]),
            )
            for a in bundle.artifacts
        },
        runtimes={file: p.description for file, p in predictors.items()},
        outputs=outputs,
        board=board(),
    )


def record_check(report: CheckReport) -> Path:
    """Add a check to the bundle's manifest and parity.md, so the bundle says on which
    architectures its parity was checked (`checked_on` lists those where it passed;
    `device_checks` keeps every check, failed ones included). The artifacts and their hashes
    are not touched; a bundle that cannot be written is left as it was."""
    bundle = load_bundle(report.bundle.root)  # as it is now, not as it was when the check began
    manifest = bundle.manifest.with_check(report.device_check())
    try:
        save_bundle_files(bundle.root, manifest)
    except OSError as exc:
        raise EdgeclsError(
            f"{bundle.root}: cannot record the check ({exc.strerror or exc}); make the bundle "
            "writable or run without --record"
        ) from None
    return bundle.root / MANIFEST
