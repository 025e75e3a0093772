"""What each format's converter module gives the export, keyed by the format table's names
(bundle/formats.py): a converter per precision, the writer of its embedded metadata, and its
int8 quantizer that can keep layers in float (for the repair). Each converter module (tflite.py,
onnx.py) fills its entries; this module only holds the tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecls.bundle.formats import FORMATS, PRECISIONS, artifact_file, format_of
from edgecls.registry import Registry


@dataclass(frozen=True)
class ArtifactFormat:
    format: str
    precision: str
    file: str
    convert: Callable  # (ExportContext, Path) -> None
    needs_calibration: bool = False


@dataclass(frozen=True)
class Quantizer:
    """One format's int8 writer that can keep nodes in float, and its per-layer error."""

    write: Callable  # (ctx, out, float_nodes, method) -> None
    errors: Callable  # (ctx, artifact, float_nodes) -> LayerReport
    methods: tuple[str, ...] = ("minmax",)


ARTIFACT_FORMATS: Registry[ArtifactFormat] = Registry("export format")
METADATA_WRITERS: Registry[Callable[[Path, bytes], None]] = Registry("metadata writer")
QUANTIZERS: Registry[Quantizer] = Registry("int8 quantizer")


def register_format(fmt: str, precision: str, needs_calibration: bool = False):
    """Decorator of a converter: `fmt` writes `precision` into the table's file name for it."""
    if precision not in FORMATS.get(fmt).precisions:
        raise ValueError(f"{fmt} has no precision {precision!r} in the format table")
    file = artifact_file(fmt, precision)
    return ARTIFACT_FORMATS.register(
        (fmt, precision), lambda fn: ArtifactFormat(fmt, precision, file, fn, needs_calibration)
    )


def load_converters() -> None:
    """Import the converter modules: each registers its entries in the tables above."""
    from edgecls.export import onnx, tflite  # noqa: F401


def metadata_writer(path: Path) -> Callable[[Path, bytes], None]:
    load_converters()
    return METADATA_WRITERS.get(format_of(path).name)


def quantizer(fmt: str) -> Quantizer:
    load_converters()
    return QUANTIZERS.get(fmt)


def planned(formats: tuple[str, ...], precisions: tuple[str, ...]) -> list[ArtifactFormat]:
    """The artifacts to write, in table order; float32 first, it is every bundle's fallback."""
    load_converters()
    chosen = [
        a for key, a in ARTIFACT_FORMATS.items() if key[0] in formats and key[1] in precisions
    ]
    return sorted(
        chosen, key=lambda a: (FORMATS.names.index(a.format), PRECISIONS.index(a.precision))
    )
