"""Anomaly detection trained on good images only (TensorFlow): synthetic defects, the scorer
network, training with a calibrated threshold, and its reports. The bundle side, TF-free, is
edgecls/bundle/anomaly.py.

Names are loaded on first use, so the CLI can list options without TensorFlow."""

from edgecls.lazy import lazy_attributes

_WHERE = {"AnomalyConfig": "config", "train_anomaly": "fit"}
__all__ = list(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
