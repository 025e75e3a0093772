"""The drift monitor as a sink: it measures the model inputs on its own thread and publishes its
state in the summary (and so on /metrics, MQTT and the final line), warning when it crosses."""

from __future__ import annotations

import time

from edgecls.runtime.drift import DriftMonitor
from edgecls.runtime.records import Record
from edgecls.runtime.sinks import SinkContext

MAX_RATE = 10.0  # frames measured per second once the window is full


class DriftSink:
    name = "drift"
    needs = frozenset({"model_input"})

    def __init__(self, reference: dict, window: int, threshold: float):
        self.monitor = DriftMonitor(reference, window, threshold)
        self.context: SinkContext | None = None
        self.taken, self.last_taken = 0, 0.0

    def open(self, context: SinkContext) -> None:
        self.context = context
        context.summary.drift = dict(self.monitor.state)

    def wants(self, event) -> bool:
        """Every frame until the window is full, then at most MAX_RATE a second: drift moves over
        minutes, and a fast loop should not pay for measuring every frame."""
        if not isinstance(event, Record) or event.model_input is None:
            return False
        now = time.monotonic()
        if self.taken >= self.monitor.window and now - self.last_taken < 1 / MAX_RATE:
            return False
        self.taken += 1
        self.last_taken = now
        return True

    def handle(self, event) -> None:  # `wants` let only records with a model input through
        before = self.context.summary.drift.get("state")
        state = self.monitor.update(event.model_input, event.confidence)
        self.context.summary.drift = state
        if state["state"] == "drift" and before != "drift":
            self.context.log(
                f"warning: drift score {state['score']:.2f} >= {state['threshold']} over the last "
                f"{state['frames']} frames (input shift {state['input_shift']:.1f} spreads in "
                f"{state['most_shifted']}, confidence PSI {state['psi']:.2f}): the camera no "
                "longer sees what the model was checked on (light, focus, lens, product?)"
            )
        elif state["state"] == "ok" and before == "drift":
            self.context.log(f"drift cleared (score {state['score']:.2f})")

    def close(self) -> None:
        pass
