"""Write the edgecls metadata (labels, input spec) into each artifact, so the sha256 that guards
the file also guards what it means; the board reads it back (bundle/tflite_metadata.py, ONNX
Runtime's custom metadata map) and cross-checks it with the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgecls.bundle.backends import METADATA_KEY


def embed_metadata(path: Path, meta: dict) -> None:
    data = json.dumps(meta, ensure_ascii=False).encode("utf-8")
    {".tflite": _tflite, ".onnx": _onnx}[Path(path).suffix](Path(path), data)


def _tflite(path: Path, data: bytes) -> None:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    flatbuffer_utils.write_model(model, str(path))


def _onnx(path: Path, data: bytes) -> None:
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = data.decode("utf-8")
            break
    else:
        model.metadata_props.add(key=METADATA_KEY, value=data.decode("utf-8"))
    onnx.save(model, str(path))
