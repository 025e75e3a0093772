"""The reject signal: a GPIO pulse per decision or part to reject, through gpiozero (lgpio on a Pi
5, RPi.GPIO or the mock pin factory in tests). The pulse runs in gpiozero's own background
thread, so a long pulse never holds the queue."""

from __future__ import annotations

import warnings

from edgecls.errors import EdgeclsError
from edgecls.runtime.records import is_reject
from edgecls.runtime.sinks import SINKS, Sink, SinkContext


class GpioSink(Sink):
    name = "gpio"

    def __init__(self, config):
        self.config = config.gpio
        self.device = None

    def open(self, context: SinkContext) -> None:
        try:
            from gpiozero import DigitalOutputDevice
        except ImportError:
            raise EdgeclsError("--gpio needs gpiozero: pip install 'edgecls[device]'") from None
        pin = int(self.config.pin) if self.config.pin.isdigit() else self.config.pin
        try:
            with warnings.catch_warnings():  # gpiozero warns per pin factory it falls back from
                warnings.simplefilter("ignore")
                self.device = DigitalOutputDevice(pin, initial_value=False)
        except Exception as exc:  # gpiozero raises its own family per pin factory
            raise EdgeclsError(
                f"--gpio {self.config.pin}: cannot drive this pin ({type(exc).__name__}: {exc}); "
                "on a Raspberry Pi install lgpio (apt install python3-lgpio, or pip install lgpio)"
            ) from None
        context.log(f"gpio: pin {self.config.pin} pulses {self.config.pulse_ms:g} ms per reject")

    def handle(self, event) -> None:
        if is_reject(event):
            self.device.blink(on_time=self.config.pulse_ms / 1000, off_time=0, n=1, background=True)

    def close(self) -> None:
        if self.device is not None:
            self.device.close()


@SINKS.register("gpio")
def make(config):
    return GpioSink(config) if config.gpio else None
