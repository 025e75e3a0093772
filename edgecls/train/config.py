"""What a training run is: its configuration (written to the run folder as config.json, all it
takes to reproduce the run) and its result."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgecls import __version__
from edgecls.bundle.preprocess import InputSpec
from edgecls.folders import FolderDataset, SplitConfig
from edgecls.train.models import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """All it takes to reproduce a run; written to the run folder as config.json. `epochs`,
    `lr` and `patience` left at None take the model's recipe (see `MODELS`)."""

    data: Path
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

    def to_dict(self) -> dict:
        d = asdict(self)
        # absolute: export and explain read the data again, from wherever they are run
        d["data"], d["out"] = os.path.abspath(self.data), os.path.abspath(self.out)
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
