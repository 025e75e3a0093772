"""Training (TensorFlow): the model registry, the tf.data pipeline and the fit loop."""

from edgecls.train.fit import TrainConfig, TrainResult, train, unique_run_dir

__all__ = ["TrainConfig", "TrainResult", "train", "unique_run_dir"]
