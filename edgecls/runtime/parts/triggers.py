"""What makes a part: `--part-trigger KIND[:ARG]`. A GPIO edge and an interval run here, on their
own; MQTT, HTTP, Modbus and OPC UA triggers arrive through the server of that output (`served_by`),
which calls `Station.trigger` when its message, request, coil or method comes in."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from edgecls.errors import EdgeclsError
from edgecls.registry import Registry

EDGES = ("rising", "falling")


@dataclass(frozen=True)
class TriggerKind:
    syntax: str  # as the help and errors show it
    check: Callable[[str], str | None]  # the argument -> what is wrong with it, or None
    served_by: str | None = None  # the option whose server receives this trigger
    start: Callable | None = None  # (arg, station, config, log) -> a running trigger with close()


PART_TRIGGERS: Registry[TriggerKind] = Registry("--part-trigger")


def _no_argument(arg: str) -> str | None:
    return f"takes no argument (:{arg})" if arg else None


for _kind, _option in (("mqtt", "--mqtt"), ("http", "--http"), ("modbus", "--modbus")):
    PART_TRIGGERS.add(_kind, TriggerKind(_kind, _no_argument, served_by=_option))
PART_TRIGGERS.add("opcua", TriggerKind("opcua", _no_argument, served_by="--opcua"))


def _check_interval(arg: str) -> str | None:
    try:
        seconds = float(arg)
    except ValueError:
        seconds = -1.0
    return None if 0 < seconds < 1e7 else "give the seconds between parts, e.g. interval:300"


class IntervalTrigger:
    """A part every SECONDS, the first at once: a trap that photographs every few minutes."""

    def __init__(self, arg: str, station, config, log):
        self.seconds = float(arg)
        self.station = station
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trigger-interval", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.station.trigger(f"interval:{self.seconds:g}")
            self.stopped.wait(self.seconds)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=1.0)


PART_TRIGGERS.add(
    "interval", TriggerKind("interval:SECONDS", _check_interval, start=IntervalTrigger)
)


def _split_gpio(arg: str) -> tuple[str, str]:
    pin, _, edge = arg.partition(":")
    return pin, edge or "rising"


def _check_gpio(arg: str) -> str | None:
    pin, edge = _split_gpio(arg)
    if not pin:
        return "give the input pin, e.g. gpio:27 or gpio:GPIO27:falling"
    if edge not in EDGES:
        return f"the edge {edge!r} is not rising or falling"
    return None


class GpioTrigger:
    """A light barrier or the PLC's output on a GPIO input (through an opto-isolator): one part
    per edge, debounced by gpiozero, whose callback runs on its own thread (lgpio's on a Pi 5)."""

    def __init__(self, arg: str, station, config, log):
        try:
            from gpiozero import DigitalInputDevice
        except ImportError:
            raise EdgeclsError(
                "--part-trigger gpio needs gpiozero: pip install 'edgecls[device]'"
            ) from None
        pin, edge = _split_gpio(arg)
        bounce = config.debounce_ms / 1000 if config.debounce_ms else None
        try:
            with warnings.catch_warnings():  # gpiozero warns per pin factory it falls back from
                warnings.simplefilter("ignore")
                self.device = DigitalInputDevice(
                    int(pin) if pin.isdigit() else pin, pull_up=False, bounce_time=bounce
                )
        except Exception as exc:  # gpiozero raises its own family per pin factory
            raise EdgeclsError(
                f"--part-trigger gpio:{arg}: cannot read this pin ({type(exc).__name__}: {exc}); "
                "on a Raspberry Pi install lgpio (apt install python3-lgpio)"
            ) from None
        origin = f"gpio:{pin}"
        fire = lambda: station.trigger(origin)  # noqa: E731
        if edge == "rising":
            self.device.when_activated = fire
        else:
            self.device.when_deactivated = fire
        log(f"part trigger: {edge} edge on pin {pin} (debounce {config.debounce_ms:g} ms)")

    def close(self) -> None:
        self.device.close()


PART_TRIGGERS.add("gpio", TriggerKind("gpio:PIN[:rising|falling]", _check_gpio, start=GpioTrigger))


INT64 = 2**63


def plc_fields(payload: str) -> tuple[int | str | None, int | None]:
    """The PLC's id and encoder count from a trigger message: `{"plc_id": 4711, "encoder":
    123456}`, a bare id (`4711`), or nothing. What cannot be read is left out, never guessed; a
    text id keeps its first 64 printable characters (no line breaks, escapes or lone surrogates
    reach a log line or an OPC UA string), a number must fit 64 bits."""
    text = payload.strip()
    if not text:
        return None, None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        return _plc_id(text), None
    if not isinstance(data, dict):
        return _plc_id(data), None
    encoder = data.get("encoder")
    encoder = encoder if _int64(encoder) else None
    return _plc_id(data.get("plc_id", data.get("id"))), encoder


def _int64(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def _plc_id(value) -> int | str | None:
    if _int64(value):
        return value
    if isinstance(value, str):
        kept = "".join(ch for ch in value if ch.isprintable())[:64]
        return kept or None
    return None
