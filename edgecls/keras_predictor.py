"""The float Keras model behind the same `Predictor` interface as the device artifacts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import HEADS, PROBABILITIES, values_of
from edgecls.errors import EdgeclsError


def load_keras_model(path: Path):
    import keras

    from edgecls.anomaly.statistics import distance_layer

    distance_layer()  # an anomaly run's model holds this layer of ours: Keras finds it by name

    try:
        with warnings.catch_warnings():  # the statistics path's feature taps, a model sharing
            # the backbone's layers, hold no weights of their own: none are left out (tested)
            warnings.filterwarnings("ignore", message="Skipping nested container")
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
        self.values = PROBABILITIES  # until an output says otherwise (see `outputs`)

    @classmethod
    def from_model(cls, model) -> KerasPredictor:
        return cls(None, model=model)

    def outputs(self, batch: np.ndarray, chunk: int = 64) -> np.ndarray:
        """The raw output; a model whose output is a dict names what it holds by its one key
        (`values`, backends.HEADS: an anomaly model's `anomaly`); a softmax classifier's are
        probabilities."""
        chunks = []
        for i in range(0, len(batch), chunk):
            out = self.model(batch[i : i + chunk].astype(np.float32), training=False)
            if isinstance(out, dict):
                self.values = values_of(out)
                out = next(iter(out.values()))
            chunks.append(np.asarray(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def predict(self, batch: np.ndarray, chunk: int = 64) -> np.ndarray:
        raw = self.outputs(batch, chunk)  # first: it finds what the values are
        return HEADS[self.values](raw)
