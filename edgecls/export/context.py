"""What every converter needs, computed once: the Keras model, its SavedModel, the float ONNX
model, and the calibration images."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ExportContext:
    model: object  # keras.Model
    input_size: tuple[int, int]
    calibration: np.ndarray  # uint8 (N, H, W, 3), through the training preprocessing
    io: str = "uint8"  # integer TFLite input/output type: uint8 | int8 | float32
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="edgecls-export-")))

    @functools.cached_property
    def saved_model(self) -> Path:
        path = self.workdir / "saved_model"
        self.model.export(str(path), format="tf_saved_model", verbose=False)
        return path

    @functools.cached_property
    def onnx_float(self) -> Path:
        from edgecls.export.onnx import keras_to_onnx

        path = self.workdir / "float32.onnx"
        keras_to_onnx(self.model, self.input_size, path)
        return path

    def calibration_batches(self):
        """Float32 batches of one image, pixels in [0, 255]: the model's own input contract."""
        for image in self.calibration:
            yield image[None].astype(np.float32)
