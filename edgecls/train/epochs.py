"""One training loop for one device, every local GPU and several machines.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
step is ours: `strategy.run` over the Keras model and optimizer inside a `tf.function`, the
loss averaged over the global batch with `tf.nn.compute_average_loss`. Keras callbacks are
driven as `fit` would drive them (early stopping, best weights, history, progress). Every
worker runs the same number of steps and sees the same reduced metrics, so they all stop
together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LoopData:
    train: object  # a distributed dataset that repeats
    val: object  # a plain dataset, evaluated whole on every worker
    steps: int  # train steps per epoch, the same on every worker


class Steps:
    """The compiled train and validation steps of one model and optimizer on one strategy."""

    def __init__(self, strategy, model, optimizer):
        import tensorflow as tf

        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        self.train = tf.function(self._train)
        self._evaluate = tf.function(self._eval_batch)
        self._agree = tf.function(self._mean_over_workers)

    def _train(self, iterator):
        import keras
        import tensorflow as tf

        model, optimizer = self.model, self.optimizer

        def step(x, y):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(y, probs)
                loss = tf.nn.compute_average_loss(per_example)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled = optimizer.scale_loss(loss)  # loss scaling under mixed precision
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return _sums(per_example, probs, y)

        sums = self.strategy.run(step, args=next(iterator))
        return self.strategy.reduce("SUM", sums, axis=None)

    def _eval_batch(self, x, y):
        import keras

        probs = self.model(x, training=False)
        return _sums(keras.losses.sparse_categorical_crossentropy(y, probs), probs, y)

    def _mean_over_workers(self, values):
        """One all-reduce per epoch: every worker takes the same early-stopping decision."""
        per_replica = self.strategy.run(lambda v: v, args=(values,))
        return self.strategy.reduce("MEAN", per_replica, axis=None)

    def val_epoch(self, dataset) -> np.ndarray:
        import tensorflow as tf

        totals = np.zeros(3)
        for x, y in dataset:
            totals += np.asarray(self._evaluate(x, y), np.float64)
        return np.asarray(self._agree(tf.constant(totals, tf.float64)))


def _sums(per_example, probs, y):
    """(sum of losses, correct, count) for one batch: sums reduce exactly across replicas."""
    import tensorflow as tf

    correct = tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
    return tf.stack(
        [
            tf.reduce_sum(tf.cast(per_example, tf.float64)),
            tf.reduce_sum(tf.cast(correct, tf.float64)),
            tf.cast(tf.size(y), tf.float64),
        ]
    )


def _logs(totals: np.ndarray, prefix: str = "") -> dict[str, float]:
    count = max(float(totals[2]), 1.0)
    return {f"{prefix}loss": totals[0] / count, f"{prefix}accuracy": totals[1] / count}


def run_epochs(steps: Steps, data: LoopData, epochs: int, callbacks: list) -> None:
    """Drive the Keras callbacks through epochs of our own steps, as `model.fit` would."""
    import keras

    model = steps.model
    cbs = keras.callbacks.CallbackList(
        callbacks, model=model, epochs=epochs, steps=data.steps, verbose=0
    )
    model.stop_training = False
    cbs.on_train_begin()
    iterator = iter(data.train)
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        totals = np.zeros(3)
        for step in range(data.steps):
            cbs.on_train_batch_begin(step)
            totals += np.asarray(steps.train(iterator), np.float64)
            cbs.on_train_batch_end(step, _logs(totals))
        logs = {**_logs(totals), **_logs(steps.val_epoch(data.val), "val_")}
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()
