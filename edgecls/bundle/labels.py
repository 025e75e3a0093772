"""labels.txt: class names, one per line, in the model's output order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.bundle.backends import Predictor
from edgecls.errors import EdgeclsError
from edgecls.schema import FileRefused, read_limited

MAX_LABELS_BYTES = 8_000_000  # a labels file is names, one a line: far less than this


def load_labels(path: Path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise EdgeclsError(f"{path}: labels file not found (one class name per line)")
    if path.is_dir():
        raise EdgeclsError(f"{path}: is a folder, not a labels file")
    try:
        text = read_limited(path, MAX_LABELS_BYTES, "a labels file").decode("utf-8")
    except FileRefused as exc:  # a FIFO, a device, a huge file, unreadable
        raise EdgeclsError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise EdgeclsError(
            f"{path}: not UTF-8 text; save it as UTF-8, one label per line"
        ) from None
    labels = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if len(labels) < 2:
        raise EdgeclsError(f"{path}: needs at least two labels, one per line")
    if len(set(labels)) != len(labels):
        raise EdgeclsError(f"{path}: a label appears twice; labels must be distinct")
    return labels


def check_outputs(predictor: Predictor, labels: list[str], model: Path) -> None:
    """A model whose output count differs from its labels would label frames wrongly: refuse it."""
    probe = predictor.predict(np.zeros((1, *predictor.input_size, 3), np.uint8))
    if probe.shape[-1] != len(labels):
        raise EdgeclsError(f"{model} has {probe.shape[-1]} outputs but {len(labels)} labels")
