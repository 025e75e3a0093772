"""Export (TensorFlow): the converters of the format table, calibration, per-layer error and the
int8 repair, and the pipeline that writes a bundle (pipeline.py).

Names are loaded on first use, so the format table is read without the pipeline."""

from edgecls.lazy import lazy_attributes

_WHERE = {
    "ExportConfig": "config",
    "ExportOptions": "config",
    "ExportResult": "pipeline",
    "export_bundle": "pipeline",
}
__all__ = list(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
