"""The one format table: each artifact format a bundle may hold, with its file suffix, the backend
that runs it and the precisions the export writes it in. The manifest's validation, artifact
file names, backend lookup, artifact selection, metadata and mixed precision derive from it.
Adding a format is one entry here, its converter in export/ (register_format, its metadata
writer and int8 quantizer) and its backend in bundle/backends.py (see CONTRIBUTING.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgecls.errors import EdgeclsError
from edgecls.registry import Registry

# Every precision an artifact may have, in the order bundles list them; int8-mixed is made by
# repairing a failed int8, never asked for.
PRECISIONS = ("float32", "float16", "dynamic", "int8", "int8-mixed")
MIXED = "int8-mixed"


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    backend: str  # the name it has in bundle.backends.BACKENDS
    precisions: tuple[str, ...]  # what `edgecls export` writes, MIXED after a repair


FORMATS: Registry[Format] = Registry("format")
FORMATS.add(
    "tflite", Format("tflite", ".tflite", "litert", ("float32", "float16", "dynamic", "int8"))
)
FORMATS.add("onnx", Format("onnx", ".onnx", "onnxruntime", ("float32", "float16", "int8")))


# The format names as a type: the manifest's schema checks `format` against it by name.
FormatName = Literal[FORMATS.names]


def artifact_file(fmt: str, precision: str) -> str:
    """The file name of an artifact in a bundle: `model_<precision><suffix>`."""
    return f"model_{precision.replace('-', '_')}{FORMATS.get(fmt).suffix}"


def format_of(path: Path) -> Format:
    """The format of a model file by its suffix; one line listing the known ones otherwise."""
    suffix = Path(path).suffix.lower()
    for f in FORMATS.values():
        if f.suffix == suffix:
            return f
    known = ", ".join(f.suffix for f in FORMATS.values())
    raise EdgeclsError(f"{path}: unknown model format {Path(path).suffix!r} (known: {known})")


def backend_formats() -> dict[str, str]:
    """Backend name -> the format it runs (`--backend litert` means the TFLite artifacts)."""
    return {f.backend: f.name for f in FORMATS.values()}
