"""The float Keras model behind the same `Predictor` interface as the device artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.errors import EdgeclsError


def load_keras_model(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # zip, h5 and deserialisation errors of every kind
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeclsError(f"{path}: not a Keras model file ({first[:160]})") from None


class KerasPredictor:
    def __init__(self, path: Path | None, model=None):
        self.model = model if model is not None else load_keras_model(path)
        self.path = path
        shape = self.model.input_shape
        self.input_size = (int(shape[1]), int(shape[2]))
        self.warnings: list[str] = []
        self.metadata = None  # a .keras file carries no edgecls metadata: labels.txt says
        self.description = "Keras (float32, TensorFlow)"

    @classmethod
    def from_model(cls, model) -> KerasPredictor:
        return cls(None, model=model)

    def predict(self, batch: np.ndarray, chunk: int = 64) -> np.ndarray:
        outputs = [
            np.asarray(self.model(batch[i : i + chunk].astype(np.float32), training=False))
            for i in range(0, len(batch), chunk)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
