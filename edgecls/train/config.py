"""What a training run is: the options of `edgecls train` (one table: the CLI and its defaults
come from it), the configuration they make (written to the run folder as config.json, all it
takes to reproduce the run), and its result."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgecls import __version__
from edgecls.anomaly.config import AnomalyConfig
from edgecls.bundle.preprocess import InputSpec
from edgecls.errors import EdgeclsError
from edgecls.folders import FolderDataset, SplitConfig
from edgecls.schema import default_of, option
from edgecls.train.distribute import STRATEGIES
from edgecls.train.models import MODELS, ModelConfig
from edgecls.train.pipeline import CACHE_MODES


@dataclass(frozen=True)
class TrainConfig:
    """All it takes to reproduce a run; written to the run folder as config.json. `epochs`,
    `lr` and `patience` left at None take the model's recipe (see `MODELS`)."""

    data: Path | tuple[Path, ...]  # one folder, or several merged into one dataset
    out: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int | None = None
    batch_size: int = 32  # global: split across replicas and workers
    lr: float | None = None
    seed: int = 42
    augment: bool = True
    patience: int | None = None
    monitor: str | None = None  # val_loss | val_accuracy
    split: SplitConfig = field(default_factory=SplitConfig)
    strategy: str = "auto"  # auto | one | mirrored | multi-worker
    deterministic: bool = False
    mixed_precision: bool = False
    cache: str = "auto"  # auto | memory | disk | none
    cache_mb: int = 1024
    save_backbone: bool = False
    allow_new_classes: bool = False  # several folders: train on the union of their classes

    @property
    def folders(self) -> tuple[Path, ...]:
        """The data folders, in the order they are merged (one for a single --data)."""
        return tuple(map(Path, self.data)) if isinstance(self.data, (tuple, list)) else (self.data,)

    def to_dict(self) -> dict:
        d = asdict(self)
        # absolute: export and explain read the data again, from wherever they are run; one
        # folder as a string (as always), several as a list
        folders = [os.path.abspath(f) for f in self.folders]
        d["data"] = folders[0] if len(folders) == 1 else folders
        d["out"] = os.path.abspath(self.out)
        d["edgecls_version"] = __version__
        d["input"] = InputSpec(*self.model.img_size).to_dict()
        return d


@dataclass
class TrainResult:
    out: Path | None  # None on a worker that is not the chief: it writes nothing
    metrics: dict
    dataset: FolderDataset
    epochs_run: int
    best_epoch: int
    interrupted: bool
    stopped_by: int | None = None  # the stop signal (SIGINT, SIGTERM, SIGHUP) that ended it


def unique_run_dir(base: Path) -> Path:
    """runs/NAME, or runs/NAME-2, -3, … so a second run never overwrites the first."""
    if not base.exists():
        return base
    i = 2
    while base.with_name(f"{base.name}-{i}").exists():
        i += 1
    return base.with_name(f"{base.name}-{i}")


RECIPE = "default: the model's recipe"
TASKS = ("classify", "anomaly")


@dataclass(frozen=True)
class TrainOptions:
    """The options of `edgecls train`, one field per command-line option; each default is the
    one of the configuration it fills (TrainConfig, ModelConfig, SplitConfig)."""

    data: list[Path] | None = option(  # noqa: RUF009
        None,
        "DIR/<class>/* or DIR/{train,val,test}/<class>/*; give it again to merge folders "
        "(same classes; each folder in every split); default: the casting sample",
    )
    allow_new_classes: bool = option(
        default_of(TrainConfig, "allow_new_classes"),
        "with several --data: train on the union of their classes (a class only one folder "
        "has is otherwise refused)",
        flag="--allow-new-classes",
    )
    task: str = option(
        "classify",
        "classify (a folder per class) or anomaly (--data holds good images only; "
        "see --defects, --max-false-reject)",
    )
    defects: Path | None = option(  # noqa: RUF009
        None, "anomaly: known bad images, to report on and check the threshold; never trained on"
    )
    max_false_reject: float = option(
        default_of(AnomalyConfig, "max_false_reject"),
        "anomaly: the share of good parts the threshold may reject (set on held-out good images)",
    )
    model: str = option(default_of(ModelConfig, "name"), f"one of: {MODELS.choices()}")
    img_size: int | None = option(
        None,
        f"square input side in pixels; default {default_of(ModelConfig, 'img_size')[0]} "
        f"(anomaly: {default_of(AnomalyConfig, 'img_size')[0]})",
    )
    epochs: int | None = option(None, f"most epochs ({RECIPE})")
    batch_size: int = option(
        default_of(TrainConfig, "batch_size"), "global batch, split across replicas and workers"
    )
    lr: float | None = option(None, f"learning rate ({RECIPE})")
    seed: int = option(
        default_of(TrainConfig, "seed"), "seed of the split, the weights and the order"
    )
    out: Path | None = option(None, "run folder; default runs/<data>-<model>")  # noqa: RUF009
    augment: bool = option(default_of(TrainConfig, "augment"), "flip, rotation, zoom, contrast")
    alpha: float = option(default_of(ModelConfig, "alpha"), "MobileNet width multiplier")
    weights: str | None = option(
        None,
        f"backbone weights: imagenet (frozen, then --fine-tune), none (all layers learn "
        "from scratch) or a file (e.g. backbone.weights.h5 from --save-backbone); default "
        f"{default_of(ModelConfig, 'weights')} (anomaly: none, the synthetic-defect path; "
        "imagenet or a file: feature statistics of a frozen MobileNetV2)",
    )
    fine_tune: int = option(
        default_of(ModelConfig, "fine_tune"), "pretrained: unfreeze the top N backbone layers"
    )
    patience: int | None = option(None, f"early stopping on val_loss ({RECIPE})")
    monitor: str | None = option(
        None, f"val_loss or val_accuracy: early stopping and best weights ({RECIPE})"
    )
    val_fraction: float = option(default_of(SplitConfig, "val_fraction"), "validation share")
    test_fraction: float = option(default_of(SplitConfig, "test_fraction"), "test share")
    strategy: str = option(
        default_of(TrainConfig, "strategy"),
        f"{STRATEGIES.choices().replace(', ', '|')}; multi-worker reads TF_CONFIG",
    )
    deterministic: bool = option(
        default_of(TrainConfig, "deterministic"),
        "TF op determinism: identical metrics on a rerun, slower",
    )
    mixed_precision: bool = option(
        default_of(TrainConfig, "mixed_precision"), "mixed_float16 on a GPU"
    )
    cache: str = option(
        default_of(TrainConfig, "cache"),
        f"decoded images: {'|'.join(CACHE_MODES)}; auto: memory within --cache-mb",
    )
    cache_mb: int = option(
        default_of(TrainConfig, "cache_mb"), "memory budget for decoded images (MB)"
    )
    save_backbone: bool = option(
        default_of(TrainConfig, "save_backbone"),
        "also write backbone.weights.h5, for --weights PATH in another run",
    )

    def check(self) -> None:
        """An unknown name or a bad size, in one line naming the option, before any work."""
        if self.task not in TASKS:
            raise EdgeclsError(f"--task {self.task!r}: choose one of {', '.join(TASKS)}")
        MODELS.get(self.model)
        STRATEGIES.get(self.strategy)
        if self.img_size is not None and self.img_size < 16:
            raise EdgeclsError(f"--img-size {self.img_size}: must be at least 16 pixels")
        if self.defects is not None and self.task != "anomaly":
            raise EdgeclsError("--defects: only with --task anomaly (a classifier trains on them)")

    def _folders(self) -> list[Path]:
        folders = [self.data] if isinstance(self.data, (str, Path)) else list(self.data or [])
        if not folders:
            raise EdgeclsError("--data: give the folder of labelled images")
        return [Path(f) for f in folders]

    def to_anomaly_config(self) -> AnomalyConfig:
        """The AnomalyConfig these options make (--task anomaly)."""
        self.check()
        folders = self._folders()
        if len(folders) != 1:
            raise EdgeclsError("--data: --task anomaly takes one folder of good images")
        side = self.img_size or default_of(AnomalyConfig, "img_size")[0]
        return AnomalyConfig(
            data=folders[0],
            out=self.out or unique_run_dir(Path("runs") / f"{folders[0].resolve().name}-anomaly"),
            defects=self.defects,
            img_size=(side, side),
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr or default_of(AnomalyConfig, "lr"),
            seed=self.seed,
            augment=self.augment,
            weights=self.weights or default_of(AnomalyConfig, "weights"),
            alpha=self.alpha,
            max_false_reject=self.max_false_reject,
            split=SplitConfig(self.val_fraction, self.test_fraction, self.seed),
        )

    def to_config(self) -> TrainConfig:
        """The TrainConfig these options make."""
        self.check()
        folders = self._folders()
        side = self.img_size or default_of(ModelConfig, "img_size")[0]
        size = (side, side)
        name = "+".join(f.resolve().name for f in folders)
        out = self.out or unique_run_dir(Path("runs") / f"{name}-{self.model}")
        return TrainConfig(
            data=folders[0] if len(folders) == 1 else tuple(folders),
            out=out,
            model=ModelConfig(
                self.model,
                size,
                self.alpha,
                self.weights or default_of(ModelConfig, "weights"),
                self.fine_tune,
            ),
            split=SplitConfig(self.val_fraction, self.test_fraction, self.seed),
            **{name: getattr(self, name) for name in _PLAIN},
        )


# TrainOptions fields that go to TrainConfig as they are (to_config builds data, out, model)
_PLAIN = tuple(
    name
    for name in TrainOptions.__dataclass_fields__
    if name in TrainConfig.__dataclass_fields__ and name not in ("data", "out", "model")
)
