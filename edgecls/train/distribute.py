"""Where training runs: one device, every local GPU, or several machines, on tf.distribute.

Multi-worker is configured by the standard `TF_CONFIG` environment variable; the chief (task
`chief`, or worker 0 when the cluster has no chief) is the only one that writes anything."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass

from edgecls.errors import EdgeclsError
from edgecls.registry import Registry
from edgecls.tf_compat import op_determinism


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the cluster, read from TF_CONFIG (no TensorFlow needed)."""

    workers: int = 1
    task_type: str = "worker"
    index: int = 0
    has_chief: bool = False  # a cluster with a `chief` task: worker 0 is then not the chief

    @property
    def is_chief(self) -> bool:
        if self.task_type == "chief":
            return True
        return not self.has_chief and self.index == 0


def cluster_task(environ=os.environ) -> ClusterTask:
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return ClusterTask()
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf.get("task", {})
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        task_type, index = str(task["type"]), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EdgeclsError(
            'TF_CONFIG is not valid: expected {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": N}}'
        ) from None
    if task_type not in ("chief", "worker"):
        raise EdgeclsError(f"TF_CONFIG task type {task_type!r}: edgecls runs chief and worker")
    if workers < 1:
        raise EdgeclsError("TF_CONFIG names no workers: list them under cluster.worker")
    return ClusterTask(workers, task_type, index, bool(cluster.get("chief")))


def _one():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def _multi_worker():
    import tensorflow as tf

    if not os.environ.get("TF_CONFIG", "").strip():
        raise EdgeclsError(
            "--strategy multi-worker needs TF_CONFIG naming the cluster and this task "
            "(see README: training on several machines)"
        )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _auto():
    """Several workers in TF_CONFIG: multi-worker; several local GPUs: mirrored; else one."""
    import tensorflow as tf

    if cluster_task().workers > 1:
        return _multi_worker()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return _mirrored()
    return _one()


STRATEGIES: Registry = Registry("--strategy")
STRATEGIES.add("auto", _auto)
STRATEGIES.add("one", _one)
STRATEGIES.add("mirrored", _mirrored)
STRATEGIES.add("multi-worker", _multi_worker)


def make_strategy(name: str):
    """Build the strategy first, before any other TensorFlow op: collective ops for several
    workers can only be configured at program start."""
    return STRATEGIES.get(name)()


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def set_precision(mixed: bool, warn) -> bool:
    """mixed_float16 compute with float32 variables and output, on a GPU only (on a CPU it is
    slower, not faster): there it says so in one line and trains in float32."""
    import keras

    if mixed and not has_gpu():
        warn("--mixed-precision: no GPU here, training in float32")
        mixed = False
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return mixed


@contextmanager
def determinism(seed: int, deterministic: bool):
    """Seeds always; with `deterministic`, TF op determinism too (same metrics on a rerun),
    switched back off afterwards so a library caller's later work keeps its speed."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    was_on, turn_off = op_determinism()
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if deterministic and not was_on:
            turn_off()
