"""The drift monitor as a sink: it measures the model inputs and publishes its state in the
summary (and so on /metrics, MQTT and the final line), warning when it crosses."""

from __future__ import annotations

from edgecls.runtime.drift import DriftMonitor
from edgecls.runtime.records import Record
from edgecls.runtime.sinks import Sink, SinkContext

MAX_RATE = 10.0  # frames measured per second once the window is full


class DriftSink(Sink):
    name = "drift"
    needs = frozenset({"model_input"})
    # a measurement is ~60 us of arithmetic on the small model input, 10 a second: less than the
    # wake-up and lock hand-off a thread of its own would cost the loop each time
    inline = True

    def __init__(self, reference: dict, window: int, threshold: float):
        self.monitor = DriftMonitor(reference, window, threshold)
        self.context: SinkContext | None = None
        # every frame until the window is full, then at most MAX_RATE a second: drift moves over
        # minutes, and a fast loop should not pay for measuring every frame
        self.rate: float | None = None

    def open(self, context: SinkContext) -> None:
        self.context = context
        context.summary.drift = dict(self.monitor.state)

    def wants(self, event) -> bool:
        """Records only: a decision has no input to measure (asked after the runner's rate
        check, so not once a frame)."""
        return isinstance(event, Record)

    def handle(self, event) -> None:
        before = self.context.summary.drift.get("state")
        state = self.monitor.update(event.model_input, event.confidence)
        if len(self.monitor.features) >= self.monitor.window:
            self.rate = MAX_RATE
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
