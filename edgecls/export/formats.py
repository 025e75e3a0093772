"""The export format table: (format, precision) -> file name and converter, one entry each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgecls.registry import Registry

PRECISIONS = ("float32", "float16", "dynamic", "int8")
FORMATS = ("tflite", "onnx")


@dataclass(frozen=True)
class ArtifactFormat:
    format: str
    precision: str
    file: str
    convert: Callable  # (ExportContext, Path) -> None
    needs_calibration: bool = False


ARTIFACT_FORMATS: Registry[ArtifactFormat] = Registry("export format")


def register_format(fmt: str, precision: str, file: str, needs_calibration: bool = False):
    return ARTIFACT_FORMATS.register(
        (fmt, precision), lambda fn: ArtifactFormat(fmt, precision, file, fn, needs_calibration)
    )


def planned(formats: tuple[str, ...], precisions: tuple[str, ...]) -> list[ArtifactFormat]:
    """The artifacts to write, in table order; float32 first, it is every bundle's fallback."""
    from edgecls.export import onnx, tflite  # noqa: F401  (registers the converters)

    chosen = [
        a for key, a in ARTIFACT_FORMATS.items() if key[0] in formats and key[1] in precisions
    ]
    return sorted(chosen, key=lambda a: (FORMATS.index(a.format), PRECISIONS.index(a.precision)))
