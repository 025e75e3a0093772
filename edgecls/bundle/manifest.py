"""The bundle manifest as typed dataclasses: built by `edgecls export`, read by every command
through `load_manifest`, which validates it once and turns anything malformed or inconsistent
into one line naming the bundle and the field. TF-free: the board reads it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from edgecls.bundle.anomaly import LABELS as ANOMALY_LABELS
from edgecls.bundle.anomaly import AnomalySpec
from edgecls.bundle.formats import PRECISIONS, FormatName
from edgecls.bundle.preprocess import InputSpec
from edgecls.durable import write_text_atomic
from edgecls.errors import EdgeclsError
from edgecls.schema import (
    MAX_JSON_BYTES,
    FileRefused,
    SchemaError,
    from_dict,
    parse_json,
    read_limited,
    to_dict,
)

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
PARITY_MD = "parity.md"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ParityThresholds:
    """Gates: quantized artifacts by accuracy drop and agreement, float32 ones by a conversion
    check (|Δprob| within `float_tolerance`)."""

    max_drop: float = 1.0  # accuracy points
    min_agreement: float = 0.97  # top-1 agreement with the float model
    float_tolerance: float = 1e-4
    max_auroc_drop: float = 0.01  # anomaly bundles with known defects: AUROC against the float

    def __post_init__(self):
        if not 0 <= self.max_drop <= 100:
            raise ValueError(f"max_drop {self.max_drop}: must be 0-100 accuracy points")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement {self.min_agreement}: must be in [0, 1]")
        if not 0 <= self.float_tolerance < 1:
            raise ValueError(f"float_tolerance {self.float_tolerance}: must be in [0, 1)")
        if not 0 <= self.max_auroc_drop <= 1:
            raise ValueError(f"max_auroc_drop {self.max_auroc_drop}: must be in [0, 1]")


@dataclass(frozen=True)
class TensorIO:
    """How to feed or read an artifact's tensor: integer tensors carry scale and zero point;
    outputs say whether they are logits (the runtime applies the softmax) or probabilities."""

    dtype: str
    scale: float | None = None
    zero_point: int | None = None
    values: Literal["logits", "probabilities", "anomaly"] | None = None


@dataclass(frozen=True)
class ParityFigures:
    """One artifact against the reference on the same labelled images."""

    n: int
    accuracy: float
    reference_accuracy: float
    accuracy_drop: float  # points; negative: better than the reference
    agreement: float
    mean_abs_prob_diff: float
    max_abs_prob_diff: float
    failures: tuple[str, ...] = ()
    # anomaly bundles: the scores' order against the float model's, and AUROC where the
    # images hold known defects (None where they do not)
    rank_correlation: float | None = None
    auroc: float | None = None
    reference_auroc: float | None = None
    auroc_drop: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class LayerErrorRow:
    """One layer of an int8 artifact's per-layer error table (the worst ones are kept here; the
    whole table is in layer_errors.json)."""

    tensor: str
    op: str
    error: float  # per-channel RMS error / std, in [0, 1]
    rmse_scale: float  # RMSE in quantization steps


@dataclass(frozen=True)
class Artifact:
    file: str
    format: FormatName  # a name in the format table (bundle/formats.py)
    precision: str
    bytes: int
    sha256: str
    input: TensorIO
    output: TensorIO
    parity: ParityFigures
    convert_seconds: float = 0.0
    repair: dict | None = None  # what a repaired/mixed int8 artifact changed (equalized, excluded)
    worst_layers: tuple[LayerErrorRow, ...] = ()  # int8: the ten worst of its per-layer error

    def __post_init__(self):
        _check_file_name(self.file)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"sha256 of {self.file} is not 64 hex digits")
        if self.bytes < 1:
            raise ValueError(f"bytes of {self.file} must be positive")

    @property
    def passed(self) -> bool:
        return self.parity.passed


@dataclass(frozen=True)
class CheckFigures:
    """One artifact's figures in a check recorded on a device (`edgecls parity --record`)."""

    accuracy: float
    agreement: float
    max_abs_prob_diff: float
    runtime: str
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class DeviceCheck:
    architecture: str
    board: str
    date: str
    data: str
    n: int
    reference: str
    artifacts: dict[str, CheckFigures]

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts.values())


@dataclass(frozen=True)
class ParityRecord:
    reference: str
    data: str
    n: int
    reference_accuracy: float
    thresholds: ParityThresholds
    checked_on: tuple[str, ...]  # architectures where every gate held
    device_checks: tuple[DeviceCheck, ...] = ()


@dataclass(frozen=True)
class Calibration:
    source: str
    n: int
    onnx_int8: str


@dataclass(frozen=True)
class SourceModel:
    file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    edgecls_version: str
    name: str
    created: str
    source_model: SourceModel
    labels: tuple[str, ...]
    input: InputSpec
    parity: ParityRecord
    artifacts: tuple[Artifact, ...]
    calibration: Calibration | None = None
    drift_reference: dict | None = None  # input/confidence statistics of the parity set
    task: Literal["classify", "anomaly"] = "classify"
    anomaly: AnomalySpec | None = None  # task anomaly: the threshold and what the scores mean

    def __post_init__(self):
        if (self.task == "anomaly") != (self.anomaly is not None):
            raise ValueError("anomaly: an anomaly bundle, and only one, carries its threshold")
        if self.task == "anomaly" and self.labels != ANOMALY_LABELS:
            raise ValueError(f"labels: an anomaly bundle's are {list(ANOMALY_LABELS)}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be at least two distinct names")
        if not self.artifacts:
            raise ValueError("artifacts: the bundle lists no artifact")
        files = [a.file for a in self.artifacts]
        if len(set(files)) != len(files):
            raise ValueError("artifacts: a file is listed twice")
        for a in self.artifacts:  # a repair names the failed int8 it replaces (gates_held)
            if a.repair is not None and a.repair.get("plain") not in files:
                raise ValueError(
                    f"artifacts: {a.file}: repair.plain {a.repair.get('plain')!r} names no "
                    "artifact of this bundle"
                )

    def artifact(self, file: str) -> Artifact:
        for a in self.artifacts:
            if a.file == file:
                return a
        raise EdgeclsError(
            f"{self.name}: no artifact {file!r} in the manifest (has: {', '.join(self.files)})"
        )

    @property
    def files(self) -> list[str]:
        return [a.file for a in self.artifacts]

    def gates_held(self, passed: dict[str, bool]) -> bool:
        """Whether the bundle holds given each artifact's result (file -> passed): a failed int8
        counts as covered when the int8-mixed artifact repaired from it passed (the failed one
        stays in the bundle as the record, and the device refuses it)."""
        repaired = {a.repair["plain"]: a.file for a in self.artifacts if a.repair}
        return all(ok or passed.get(repaired.get(f, ""), False) for f, ok in passed.items())

    def with_check(self, check: DeviceCheck) -> Manifest:
        """This manifest with a device check recorded; its architecture joins `checked_on` only
        when every gate held."""
        checked = self.parity.checked_on
        held = self.gates_held({f: r.passed for f, r in check.artifacts.items()})
        if held and check.architecture not in checked:
            checked = (*checked, check.architecture)
        parity = replace(
            self.parity, checked_on=checked, device_checks=(*self.parity.device_checks, check)
        )
        return replace(self, parity=parity)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, ensure_ascii=False) + "\n"


def _check_file_name(name: str) -> None:
    """Artifacts live in the bundle folder itself: a bare file name, nothing that climbs out."""
    p = PurePosixPath(name)
    if not name or "\\" in name or p.is_absolute() or len(p.parts) != 1 or name in (".", ".."):
        raise ValueError(f"file {name!r} must be a plain file name inside the bundle folder")


def parse_manifest(text: str, where: str) -> Manifest:
    """Validate manifest text; every problem (nesting too deep included) is one SchemaError naming
    `where` and the field."""
    data = parse_json(text, where)
    if not isinstance(data, dict):
        raise SchemaError(where, "", "must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            where,
            "schema_version",
            f"{version!r} is not supported: this edgecls reads {SCHEMA_VERSION}; "
            + (
                "re-export the bundle with this edgecls"
                if isinstance(version, int) and version < SCHEMA_VERSION
                else "upgrade edgecls on this machine"
            ),
        )
    return from_dict(Manifest, data, where)


def load_manifest(root: Path) -> Manifest:
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        raise EdgeclsError(f"{root}: not a bundle (no {MANIFEST}); make one with `edgecls export`")
    what = "a manifest written by `edgecls export`"
    try:  # bounded: a FIFO, /dev/zero or a huge file is one line, never a hang
        text = read_limited(path, MAX_JSON_BYTES, what).decode("utf-8")
    except FileRefused as exc:
        raise EdgeclsError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise EdgeclsError(f"{path}: not UTF-8 text; copy the bundle again") from None
    return parse_manifest(text, str(path))


def save_manifest(root: Path, manifest: Manifest, parity_md: str) -> None:
    """manifest.json and parity.md, each atomically; both written before either is swapped in
    is not possible with two files, so the manifest (the contract) goes last."""
    write_text_atomic(Path(root) / PARITY_MD, parity_md)
    write_text_atomic(Path(root) / MANIFEST, manifest.to_json())


def embedded_metadata(labels, spec: InputSpec) -> dict:
    """What each artifact carries about itself, so its sha256 also guards what it means."""
    return {"labels": list(labels), "input": to_dict(spec)}


def check_embedded(root: Path, artifact: Artifact, meta: dict | None, manifest: Manifest) -> None:
    """Refuse an artifact whose own metadata disagrees with the manifest (reordered labels, other
    input size or preprocessing) before the first frame."""
    where = f"{Path(root) / artifact.file}"
    if meta is None:
        raise EdgeclsError(
            f"{where}: carries no edgecls metadata (labels, input spec); re-export the bundle"
        )
    labels = tuple(meta.get("labels", ()))
    if labels != manifest.labels:
        raise EdgeclsError(
            f"{where}: labels {list(labels)} differ from the manifest's {list(manifest.labels)} "
            "(edited manifest?); copy the bundle again or re-export"
        )
    try:
        spec = from_dict(InputSpec, meta.get("input"), where)
    except SchemaError as exc:
        raise EdgeclsError(f"{where}: embedded input spec: {exc.field}: {exc.problem}") from None
    if spec != manifest.input:
        raise EdgeclsError(
            f"{where}: input spec {to_dict(spec)} differs from the manifest's "
            f"{to_dict(manifest.input)}; copy the bundle again or re-export"
        )
