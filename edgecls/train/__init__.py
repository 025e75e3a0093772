"""Training (TensorFlow): the model registry, the tf.data pipeline and the fit loop.

Names are loaded on first use, so the CLI can list the model registry without the rest."""

from __future__ import annotations

__all__ = ["TrainConfig", "TrainResult", "train", "unique_run_dir"]


def __getattr__(name: str):
    if name in __all__:
        from edgecls.train import fit

        return getattr(fit, name)
    raise AttributeError(f"module 'edgecls.train' has no attribute {name!r}")
