"""Write the edgecls metadata (labels, input spec) into each artifact, so the sha256 that guards
the file also guards what it means; the board reads it back (bundle/tflite_metadata.py, ONNX
Runtime's custom metadata map) and cross-checks it with the manifest. Each format's writer lives
with its converter (METADATA_WRITERS)."""

from __future__ import annotations

import json
from pathlib import Path

from edgecls.export.formats import metadata_writer


def embed_metadata(path: Path, meta: dict) -> None:
    data = json.dumps(meta, ensure_ascii=False).encode("utf-8")
    metadata_writer(Path(path))(Path(path), data)
