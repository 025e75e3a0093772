"""labels.txt: class names, one per line, in the model's output order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.bundle.backends import Predictor
from edgecls.errors import EdgeclsError


def load_labels(path: Path) -> list[str]:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise EdgeclsError(f"{path}: labels file not found (one class name per line)") from None
    except IsADirectoryError:
        raise EdgeclsError(f"{path}: is a folder, not a labels file") from None
    except OSError as exc:
        raise EdgeclsError(f"{path}: cannot read ({exc.strerror})") from None
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
