"""What an anomaly run is: its configuration (written to the run folder as config.json, with
`task: anomaly`, which export and explain read) and its result."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgecls import __version__
from edgecls.bundle.preprocess import InputSpec
from edgecls.errors import EdgeclsError
from edgecls.folders import FolderDataset, SplitConfig

TASK = "anomaly"
DEFAULT_SIZE = 96  # measured on the casting sample: AUROC 0.999 at 96 px, 0.904 at 128 (same steps)
RECIPE_STEPS = 160  # optimizer steps the recipe needs, whatever the number of good images
MAX_EPOCHS = 40


@dataclass(frozen=True)
class AnomalyConfig:
    """All it takes to reproduce an anomaly run; `epochs` left at None gives the recipe's
    RECIPE_STEPS steps (the step count, not the image count, decides whether it learns)."""

    data: Path  # good images, any layout
    out: Path
    defects: Path | None = None  # known bad images: reported on, never trained on
    img_size: tuple[int, int] = (DEFAULT_SIZE, DEFAULT_SIZE)
    # none: the network learns good images against synthetic defects (model.py); imagenet or a
    # backbone file: statistics of a frozen MobileNetV2's features (statistics.py)
    weights: str = "none"
    alpha: float = 1.0  # the statistics path's MobileNetV2 width
    width: int = 32
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 42
    augment: bool = True  # flips, quarter turns, light
    max_false_reject: float = 0.01
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self):
        if self.img_size[0] % 8 or self.img_size[1] % 8:
            raise EdgeclsError(f"--img-size {self.img_size[0]}: must be a multiple of 8 (anomaly)")
        if not 0 <= self.max_false_reject < 0.5:
            raise EdgeclsError(f"--max-false-reject {self.max_false_reject}: must be in [0, 0.5)")

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"

    def epochs_for(self, n_images: int) -> int:
        if self.epochs is not None:
            return self.epochs
        steps = max(1, math.ceil(2 * n_images / self.batch_size))  # each image good + defect
        return min(MAX_EPOCHS, max(2, math.ceil(RECIPE_STEPS / steps)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            task=TASK,
            data=os.path.abspath(self.data),
            defects=os.path.abspath(self.defects) if self.defects else None,
            out=os.path.abspath(self.out),
            edgecls_version=__version__,
            input=InputSpec(*self.img_size).to_dict(),
        )
        return d


@dataclass
class AnomalyResult:
    out: Path
    metrics: dict
    dataset: FolderDataset
    epochs_run: int
    interrupted: bool = False
    stopped_by: int | None = None
