"""Keras callbacks our own loop drives: a rich progress bar that records the history, and early
stopping on the monitored validation metric (val_loss or val_accuracy) that restores the best
weights."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _metrics_text(logs: dict) -> str:
    text = f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f}"
    if "val_loss" in logs:
        text += f" val_loss {logs['val_loss']:.3f} val_acc {logs.get('val_accuracy', 0):.3f}"
    return text


def keras_callbacks(
    progress: Progress, steps: int, history: list[dict], patience: int, monitor: str = "val_loss"
):
    """(early stopping, every callback): a bar per epoch with live loss/accuracy that appends
    each epoch's logs to `history`, then early stopping on `monitor` with the best weights
    kept."""
    import keras

    class RichProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.task = progress.add_task(
                f"epoch {epoch + 1}/{self.params['epochs']}", total=steps, info=""
            )

        def on_train_batch_end(self, batch, logs=None):
            progress.update(self.task, completed=batch + 1, info=_metrics_text(logs or {}))

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            history.append({"epoch": epoch + 1, **logs})
            progress.update(self.task, completed=steps, info=_metrics_text(logs))

    early = keras.callbacks.EarlyStopping(
        monitor=monitor,
        mode="min" if monitor.endswith("loss") else "max",
        patience=patience,
        restore_best_weights=True,
        verbose=0,
    )
    return early, [RichProgress(), early]


def stop_check(stops):
    """Ends training at the next step once a stop signal is noted in `stops` (a StopSignals in
    its deferred mode): as Ctrl-C does, with `Interrupted`, raised where the loop can take it
    rather than inside a step."""
    import keras

    from edgecls.durable import Interrupted

    class StopCheck(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if stops.signal is not None:
                raise Interrupted(stops.signal)

        def on_epoch_end(self, epoch, logs=None):  # after the epoch is counted and kept
            self.on_train_batch_end(0)

    return StopCheck()
