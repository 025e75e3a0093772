"""Training (TensorFlow): the model registry, the tf.data pipeline, the fit loop and the reports.

Names are loaded on first use, so the CLI can list the model registry without the rest."""

from edgecls.lazy import lazy_attributes

_WHERE = {
    "TrainConfig": "config",
    "TrainResult": "config",
    "train": "fit",
    "unique_run_dir": "config",
    "TrainOptions": "config",
}
__all__ = list(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
