"""SHAP reports for the float Keras model or any bundle artifact, with checks that they are
faithful (pipeline.py); the explainers are a registry (methods.py), loaded without the pipeline.
An anomaly model is explained by its own anomaly map instead (anomaly.py)."""

from edgecls.lazy import lazy_attributes

_WHERE = {"ExplainConfig": "pipeline", "explain": "pipeline"}
__all__ = list(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
