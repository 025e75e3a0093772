"""A run folder (`runs/NAME/`): resolve it (or a bare .keras file), read its labels and config,
and rebuild the splits it was trained on. TF-free: export and explain both start here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgecls.bundle.labels import load_labels
from edgecls.bundle.preprocess import CURRENT, InputSpec, preprocessing_from_legacy
from edgecls.errors import EdgeclsError
from edgecls.folders import Split, SplitConfig, load_folders, load_good_images
from edgecls.schema import from_dict, load_json

MODEL_FILE, LABELS_FILE, CONFIG_FILE = "model.keras", "labels.txt", "config.json"


@dataclass(frozen=True)
class RunRecord:
    """What export and explain read from a run's config.json, typed: the data it was trained on
    (absolute: one folder, or the list of folders it merged), how it was split, and its input
    path. The rest of the file is the training's own record (TrainConfig.to_dict) and is not
    read here."""

    data: str | list[str] | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    input: dict | None = None  # InputSpec.to_dict(); runs before identifiers have `resize`
    allow_new_classes: bool = False  # several folders: their union of classes was trained
    task: str = "classify"  # or "anomaly": `data` holds good images only (edgecls/anomaly)
    defects: str | None = None  # anomaly: known bad images, in the test split only
    max_false_reject: float | None = None  # anomaly: what its threshold was set for
    threshold: float | None = None  # anomaly: set by training, folded into the model
    map_size: tuple[int, int] | None = None  # anomaly: the map's rows and columns

    @property
    def folders(self) -> list[str]:
        """The data folders, one or several, in the order training merged them."""
        if not self.data:
            return []
        return [self.data] if isinstance(self.data, str) else list(self.data)


@dataclass(frozen=True)
class RunSource:
    """The model to export or explain, with what it means: labels, name, training config."""

    model_path: Path
    labels: list[str]
    name: str
    config: RunRecord | None

    @property
    def task(self) -> str:
        return self.config.task if self.config else "classify"

    @property
    def preprocessing(self) -> str:
        """The input path the model was trained on: runs written before identifiers existed
        are read under their true (older) one, so calibration and the device match training."""
        spec = (self.config.input if self.config else None) or {}
        if "preprocessing" in spec:
            return spec["preprocessing"]
        if "resize" in spec:
            return preprocessing_from_legacy(spec["resize"])
        return CURRENT

    def input_spec(self, size: tuple[int, int]) -> InputSpec:
        try:
            return InputSpec(*size, preprocessing=self.preprocessing)
        except ValueError as exc:
            raise EdgeclsError(f"{self.model_path.parent / CONFIG_FILE}: {exc}") from None


def _read_config(path: Path) -> RunRecord | None:
    """The typed record of config.json; a wrong type is one line naming the file and field."""
    if not path.is_file():
        return None
    try:
        config = load_json(path)
    except EdgeclsError as exc:
        raise EdgeclsError(f"not a readable run config ({exc}); retrain") from None
    if not isinstance(config, dict):
        raise EdgeclsError(f"{path}: not a run config (a JSON object); retrain")
    return from_dict(RunRecord, config, str(path), strict=False)


def resolve_source(path: Path, labels: Path | None = None) -> RunSource:
    """A run folder, or a .keras file with labels.txt beside it (or `labels`)."""
    path = Path(path)
    if path.is_dir():
        model = path / MODEL_FILE
        if not model.is_file():
            raise EdgeclsError(
                f"{path}: run folder has no {MODEL_FILE}; train first or pass the model file"
            )
        name = path.name
    elif not path.is_file():
        raise EdgeclsError(f"{path}: no such run folder or model file")
    elif path.suffix != ".keras":
        raise EdgeclsError(f"{path}: give a run folder or a .keras model")
    else:
        model = path
        name = path.parent.name if path.stem == "model" else path.stem
    labels = labels or model.parent / LABELS_FILE
    if not labels.is_file():
        raise EdgeclsError(f"no {LABELS_FILE} beside {model}: pass --labels FILE")
    return RunSource(model, load_labels(labels), name, _read_config(model.parent / CONFIG_FILE))


def run_split(source: RunSource, name: str) -> tuple[Split, str]:
    """A split of the dataset the run was trained on, rebuilt from its config.json: every
    folder it merged, split as training split them."""
    cfg = source.config
    folders = cfg.folders if cfg else []
    if cfg and cfg.task == "anomaly":
        folders += [cfg.defects] if cfg.defects else []
    if not folders or not all(Path(f).is_dir() for f in folders):
        missing = next((f for f in folders if not Path(f).is_dir()), None)
        raise EdgeclsError(
            f"{source.model_path}: the training data of this model is not "
            f"{'known' if missing is None else f'here ({missing})'}; pass --eval-data DIR "
            "(and --calibration DIR for int8)"
        )
    if cfg.task == "anomaly":
        ds = load_good_images(Path(cfg.data), cfg.defects and Path(cfg.defects), cfg.split)
    else:
        ds = load_folders([Path(f) for f in folders], cfg.split, cfg.allow_new_classes)
    data = ", ".join(folders)
    if ds.classes != source.labels:
        raise EdgeclsError(f"{data}: classes {ds.classes} differ from the model's labels")
    split = ds.splits.get(name) or ds.splits["val"]
    return split, f"{data} ({name} split)"
