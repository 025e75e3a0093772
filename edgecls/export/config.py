"""What an export is: ExportConfig, as a Python user makes it, and the options of `edgecls export`,
one table from which its command line comes, whose defaults are those of the configuration they
fill (ExportConfig, ParityThresholds, RepairOptions)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from edgecls.bundle.formats import FORMATS
from edgecls.bundle.manifest import ParityThresholds
from edgecls.bundle.parity import ANOMALY_THRESHOLDS
from edgecls.errors import EdgeclsError
from edgecls.export.context import ONNX_INT8
from edgecls.export.mixed import RepairOptions
from edgecls.schema import default_of, option

_FORMATS = ",".join(FORMATS.names)


@dataclass(frozen=True)
class ExportConfig:
    source: Path  # a run folder, or a .keras file with labels.txt beside it (or `labels`)
    out: Path | None = None  # default export/<name>
    formats: tuple[str, ...] = FORMATS.names
    precisions: tuple[str, ...] = ("float32",)
    io: str = "uint8"
    onnx_int8: str = "u8u8"  # see export.context.ONNX_INT8 for why u8u8
    calibration: Path | None = None
    calibration_size: int = 200
    eval_data: Path | None = None
    labels: Path | None = None
    thresholds: ParityThresholds | None = None  # None: `gates` of the task and the two below
    max_drop: float | None = None  # None: the task's default
    min_agreement: float | None = None

    def gates(self, task: str) -> ParityThresholds:
        """The parity gates: as given, or the task's defaults (anomaly: ANOMALY_THRESHOLDS, the
        verdicts' agreement) with --max-drop and --min-agreement where given."""
        if self.thresholds is not None:
            return self.thresholds
        base = ANOMALY_THRESHOLDS if task == "anomaly" else ParityThresholds()
        given = {"max_drop": self.max_drop, "min_agreement": self.min_agreement}
        return replace(base, **{k: v for k, v in given.items() if v is not None})

    seed: int = 0
    repair: RepairOptions = field(default_factory=RepairOptions)  # a failed int8 (--no-repair)
    sign_key: Path | None = None  # sign the bundle with this private key (bundle.sig)
    champion: Path | None = None  # refuse a model worse than this one (run, bundle, artifact)
    holdout: Path | None = None  # ... on these labelled images (given with `champion`)
    champion_margin: float = 0.0  # points the candidate may lose to the champion and still ship

    def __post_init__(self):
        if (self.champion is None) != (self.holdout is None):
            pair = ["--champion", "--holdout"]
            given, missing = pair if self.holdout is None else pair[::-1]
            raise EdgeclsError(
                f"{given} needs {missing}: give both (the model to beat and the labelled images "
                "to compare on) or neither"
            )
        if not 0 <= self.champion_margin <= 100:
            raise EdgeclsError("--champion-margin must be between 0 and 100 points")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise EdgeclsError(f"--format {','.join(bad)}: choose from {FORMATS.choices()}")
        if self.io not in ("uint8", "int8", "float32"):
            raise EdgeclsError(f"--io {self.io}: choose uint8, int8 or float32")
        if self.onnx_int8 not in ONNX_INT8:
            raise EdgeclsError(f"--onnx-int8 {self.onnx_int8}: choose {' or '.join(ONNX_INT8)}")
        if self.calibration_size < 1:
            raise EdgeclsError("--calibration-size must be at least 1")
        written = {p for f in FORMATS.values() for p in f.precisions}
        unknown = [p for p in self.precisions if p not in written]
        if unknown:
            raise EdgeclsError(f"unknown precision {unknown}")


@dataclass(frozen=True)
class ExportOptions:
    source: Path = option(  # noqa: RUF009
        ..., "run folder (or a .keras file with labels.txt)", argument=True
    )
    out: Path | None = option(None, "bundle folder; default export/<run name>")  # noqa: RUF009
    int8: bool = option(False, "full-integer TFLite + static int8 ONNX (QDQ)", flag="--int8")
    fp16: bool = option(False, "float16 TFLite and ONNX", flag="--fp16")
    dynamic: bool = option(False, "dynamic-range TFLite", flag="--dynamic")
    format: str = option(_FORMATS, f"comma-separated: {_FORMATS}")
    io: str = option(
        default_of(ExportConfig, "io"), "int8 TFLite input/output type: uint8, int8 or float32"
    )
    onnx_int8: str = option(
        default_of(ExportConfig, "onnx_int8"),
        "int8 ONNX activations/weights: u8u8 (same bits on ARM and x86), u8s8, or s8s8 "
        "(symmetric int8 QDQ, the form TensorRT takes: for a Jetson)",
    )
    repair: bool = option(
        default_of(RepairOptions, "enabled"),
        "when an int8 artifact fails its gate: equalize, recalibrate, then keep its worst layers "
        "in float, writing model_int8_mixed.* if that passes",
    )
    calibration: Path | None = option(  # noqa: RUF009
        None, "calibration images; default calibration_data/, else the run's training split"
    )
    calibration_size: int = option(
        default_of(ExportConfig, "calibration_size"),
        "class-balanced calibration sample size",
        min=1,
    )
    eval_data: Path | None = option(  # noqa: RUF009
        None, "labelled images for parity; default the run's test split"
    )
    labels: Path | None = option(None, "labels.txt for a bare .keras file")  # noqa: RUF009
    max_drop: float | None = option(
        None,
        "gate: most accuracy points a quantized artifact may lose; default "
        f"{default_of(ParityThresholds, 'max_drop')} (anomaly bundles: "
        f"{ANOMALY_THRESHOLDS.max_drop})",
        min=0.0,
        max=100.0,
    )
    min_agreement: float | None = option(
        None,
        "gate: least top-1 agreement with the float model; default "
        f"{default_of(ParityThresholds, 'min_agreement')} (anomaly bundles: verdicts, "
        f"{ANOMALY_THRESHOLDS.min_agreement})",
        min=0.0,
        max=1.0,
    )
    seed: int = option(default_of(ExportConfig, "seed"), "seed of the calibration sample")
    sign_key: Path | None = option(  # noqa: RUF009
        None, "private EC key (PEM): sign the bundle (bundle.sig) before it is published"
    )
    champion: Path | None = option(  # noqa: RUF009
        None,
        "run folder, bundle or model file to beat: export nothing if this model is less "
        "accurate on --holdout (see `edgecls compare`)",
    )
    holdout: Path | None = option(  # noqa: RUF009
        None, "labelled images for --champion: DIR/<class>/* (a split layout: its test/)"
    )
    champion_margin: float = option(
        default_of(ExportConfig, "champion_margin"),
        "--champion: accuracy points the model may lose to the champion and still be exported",
        min=0.0,
        max=100.0,
    )

    def to_config(self) -> ExportConfig:
        wanted = {"float16": self.fp16, "dynamic": self.dynamic, "int8": self.int8}
        return ExportConfig(
            source=self.source,
            out=self.out,
            formats=tuple(f.strip() for f in self.format.split(",") if f.strip()),
            precisions=("float32", *(p for p, on in wanted.items() if on)),
            io=self.io,
            onnx_int8=self.onnx_int8,
            calibration=self.calibration,
            calibration_size=self.calibration_size,
            eval_data=self.eval_data,
            labels=self.labels,
            seed=self.seed,
            max_drop=self.max_drop,
            min_agreement=self.min_agreement,
            repair=RepairOptions(enabled=self.repair),
            sign_key=self.sign_key,
            champion=self.champion,
            holdout=self.holdout,
            champion_margin=self.champion_margin,
        )
