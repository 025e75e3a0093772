"""Modbus TCP for the PLC (`--modbus [HOST:]PORT`, host 127.0.0.1 unless given), in the classic
handshake: the PLC writes its part id and encoder count, sets the trigger coil, waits for
ResultValid to toggle, then reads the verdict. Any unit id is answered (one device per server).

| table (function codes) | address | name | meaning |
|---|---|---|---|
| coil (1, 5, 15) | 0 | Trigger | write 1: one part, with 100-103 as its PLC id and encoder |
| coil | 1 | Reset | write 1: registers 12-99 count from 0 again |
| discrete input (2) | 0-5 | status | Ready, Busy, ResultValid, Pass, Fail, FailSafe: register 1 |
| register (3 and 4) | 0 | heartbeat | +1 a second while the run is alive: the PLC's watchdog |
| register | 1 | status | bits 0-5 as the discrete inputs |
| register | 2 | sequence | +1 per verdict |
| register | 3 | verdict code | label index + 1; 0 none yet; 65535 fail-safe reject |
| register | 4 | confidence | x 1000 |
| register | 5-6 | part id | the station's id, unique across restarts |
| register | 7-8 | PLC id | echoed when numeric, else 0 |
| register | 9-10 | encoder | echoed, two's complement; 0 when none |
| register | 11 | latency | trigger to verdict, ms (at most 65535) |
| register | 12-19 | counters | answered 12, rejected 14, fail-safe 16, over the queue 18 |
| register | 20 + 2i | label i | parts of label i (labels.txt order; the first 40 labels) |
| holding (3, 6, 16) | 100-101 | PLC id | written by the PLC before the trigger |
| holding | 102-103 | encoder | written by the PLC before the trigger (signed) |

"register" is a holding (FC3) and an input (FC4) register alike; only 100-103 take writes (the
others answer ILLEGAL ADDRESS, as do writes to coils above 1). 32-bit values are two
registers, high word first; the heartbeat and the sequence wrap at 65536. Ready: a trigger is
taken without overflowing --part-queue; Busy: parts wait for their verdict (both read from the
station at each request). ResultValid toggles with every verdict; Pass or Fail says whether the
part is rejected (a --trigger label, or the fail-safe reject), FailSafe that no verdict came
within the window.

The coils: every write of 1 acts once and the server sets the coil back to 0 right after its
reply (which echoes the 1), so the PLC sees it was taken. The trigger is made inside the write
request, before the reply: the reply means the part exists. A trigger without --part-trigger
modbus makes no part: the coil keeps its 1 (the PLC's handshake times out), the first such write
is logged and all are counted. The reset coil moves the server's own offsets; the run's counters
(summary, /metrics) are untouched.

A verdict is written whole, the sequence and status last, under the one lock every request
takes, so a request sees all of a verdict or none of it; read 0-19 in one request all the same,
as the next verdict may come between two requests. pymodbus runs on a thread of its own event
loop; the register image is the server's, pymodbus's tables only carry it (`_action`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket
import threading
from collections import Counter

from edgecls.errors import EdgeclsError
from edgecls.logs import verbose
from edgecls.runtime.loop_options import is_loopback
from edgecls.runtime.records import PartRecord
from edgecls.runtime.sinks import SINKS, Sink, SinkContext

TRIGGER, RESET = 0, 1  # coils
COIL_BITS = 2  # coils beyond these refuse writes
READY, BUSY, VALID, PASS, FAIL, FAIL_SAFE = (1 << i for i in range(6))  # status bits = inputs
HEARTBEAT, STATUS, SEQUENCE, CODE = 0, 1, 2, 3  # holding registers
COUNTERS, LABEL_COUNTERS = 12, 20
PLC_WRITES = 100  # 100-101 PLC id, 102-103 encoder: the only writable registers
MAX_LABELS = (PLC_WRITES - LABEL_COUNTERS) // 2
FAIL_SAFE_CODE = 0xFFFF
HEARTBEAT_S = 1.0
CLOSE_S = 2.0


def split32(value: int) -> list[int]:
    """Two registers, high word first (the low 32 bits; a negative value in two's complement)."""
    value &= 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


def join32(high: int, low: int, signed: bool = False) -> int:
    value = (high << 16) | low
    return value - (1 << 32) if signed and value >= 1 << 31 else value


def numeric(value) -> int:
    """The PLC id as a number where it is one (an int, or a string of digits), else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    # ASCII digits only: "²" is a digit to isdigit() but not to int()
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 0


def verdict_words(part: PartRecord) -> list[int]:
    """Holding registers 3-11 for one verdict."""
    labels = part.identity.labels
    if part.label is None:
        code = FAIL_SAFE_CODE
    else:
        code = labels.index(part.label) + 1 if part.label in labels else 0
    confidence = min(1000, max(0, round(part.confidence * 1000)))
    return [
        code,
        confidence,
        *split32(part.part),
        *split32(numeric(part.plc_id)),
        *split32(part.encoder or 0),
        min(0xFFFF, max(0, round(part.latency_ms))),
    ]


def verdict_bits(part: PartRecord) -> int:
    return (FAIL if part.reject else PASS) | (FAIL_SAFE if part.fail_safe else 0)


class ModbusSink(Sink):
    name = "modbus"
    # a verdict is a hundred list writes under a lock held only for copies: done where the
    # station publishes it, the PLC sees it without waiting for a thread's wake-up
    inline = True

    def __init__(self, config):
        self.address = config.modbus
        self.lock = threading.Lock()  # the register image: the server's thread and the verdicts
        self.image = [0] * (PLC_WRITES + 4)  # holding registers 0-103
        self.coils = 0  # bit i: coil i
        self.offsets: tuple[list[int], Counter] = ([0, 0, 0, 0], Counter())  # the reset coil's
        self.labels: tuple[str, ...] = ()
        self.ignored = 0  # trigger coil writes without --part-trigger modbus
        self.failed_once = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.listening = concurrent.futures.Future()  # the server's thread: listening or not
        self.port = self.address.port

    def wants(self, event) -> bool:
        return isinstance(event, PartRecord)

    def open(self, context: SinkContext) -> None:
        try:
            from pymodbus.constants import ExcCodes
        except ImportError:
            raise EdgeclsError("--modbus needs pymodbus: pip install 'edgecls[device]'") from None
        self.illegal_address = ExcCodes.ILLEGAL_ADDRESS
        self.device_failure = ExcCodes.DEVICE_FAILURE
        self.context = context
        self.labels = context.identity.labels
        if not verbose():  # pymodbus logs a failed bind and each client's errors on its own
            logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # its accept errors likewise
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="modbus", daemon=True)
        self.thread.start()
        try:
            listening = self.listening.result(timeout=10.0)
        except concurrent.futures.TimeoutError:  # not the builtin one before Python 3.11
            listening = False
        except BaseException:
            self.close()
            raise
        if not listening:
            self.close()
            raise EdgeclsError(cannot_listen(self.address.host, self.address.port))
        context.log(
            f"modbus: serving {shown(self.address.host)}:{self.port} "
            "(any unit id; register map in device/README.md)"
        )
        if not is_loopback(self.address.host):  # the protocol has no login: say where it is open
            context.log(
                f"warning: modbus: {shown(self.address.host)}:{self.port} is open to the network "
                "and Modbus has no authentication: keep it on the PLC's network (see SECURITY.md)"
            )

    def _run(self) -> None:
        """The server's thread: its event loop until close(), then every task it left ended."""
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self.listening.done():
                self.listening.set_exception(exc)
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        from pymodbus.server import ModbusTcpServer

        self.stopping = asyncio.Event()
        server = ModbusTcpServer(self._device(), address=(self.address.host, self.address.port))
        if not await server.listen():  # pymodbus keeps the OSError to itself: cannot_listen()
            self.listening.set_result(False)
            return
        self.port = server.transport.sockets[0].getsockname()[1]
        self.listening.set_result(True)
        beat = asyncio.create_task(self._beat())
        await self.stopping.wait()
        beat.cancel()
        await server.shutdown()  # the listening socket and every client's connection

    def _device(self):
        """Four tables of their own; what a request reads comes from the image (the action)."""
        from pymodbus.simulator import DataType, SimData, SimDevice

        def bits():
            return [SimData(0, values=[False] * 16, datatype=DataType.BITS)]

        holding = [
            SimData(0, count=PLC_WRITES, datatype=DataType.REGISTERS, readonly=True),
            SimData(PLC_WRITES, count=4, datatype=DataType.REGISTERS),
        ]
        inputs = [SimData(0, count=PLC_WRITES, datatype=DataType.REGISTERS)]
        return SimDevice(id=0, simdata=(bits(), bits(), holding, inputs), action=self._action)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if not self.context.stop.is_set():
                with self.lock:
                    self.image[HEARTBEAT] = (self.image[HEARTBEAT] + 1) & 0xFFFF

    async def _action(self, function, start, address, count, registers, values):
        """pymodbus calls this before each request touches a table (on the server's thread):
        a read gets the image copied in, a write goes into the image."""
        try:
            if values is None:
                self._fill(function, registers)
                return None
            if function in (5, 15):
                return self._write_coils(address, values)
            with self.lock:  # 100-103: the table refuses writes to the others before this
                self.image[address : address + len(values)] = values
            return None
        except Exception as exc:  # a bug here must not pass as an answer: the PLC gets an error
            self._failed(exc)
            return self.device_failure

    def _fill(self, function: int, registers: list[int]) -> None:
        with self.lock:
            status = self._status()
            if function == 2:
                registers[0] = status & 0x3F
            elif function in (1, 5, 15):
                registers[0] = self.coils
            else:  # holding (3, and 22/23 read-modify-writes) or input registers (4)
                n = PLC_WRITES if function == 4 else len(self.image)
                registers[:n] = self.image[:n]
                registers[STATUS] = status

    def _status(self) -> int:
        station = self.context.station
        live = 0
        if station is not None:
            live = (READY if station.ready else 0) | (BUSY if station.busy else 0)
        return (self.image[STATUS] & ~(READY | BUSY)) | live

    def _write_coils(self, address: int, values: list[bool]):
        if address + len(values) > COIL_BITS:
            return self.illegal_address
        written = {address + i: on for i, on in enumerate(values)}
        trigger, reset = written.get(TRIGGER, False), written.get(RESET, False)
        station = self.context.station
        take = trigger and station is not None and station.config.accepts("modbus")
        with self.lock:
            for coil, on in written.items():
                self.coils = self.coils | (1 << coil) if on else self.coils & ~(1 << coil)
            plc = self.image[PLC_WRITES : PLC_WRITES + 4]
            if reset:
                self.offsets = self._totals()
                self.image[COUNTERS:PLC_WRITES] = self._counter_words(self.offsets)
        if take:  # a stopping station takes no part: the coil stays 1, the PLC's wait times out
            plc_id, encoder = join32(*plc[:2]), join32(*plc[2:], signed=True)
            take = station.trigger("modbus", plc_id, encoder) is not None
        elif trigger:
            self._ignored_trigger()
        done = (1 << TRIGGER if take else 0) | (1 << RESET if reset else 0)
        if done:  # after this request's reply, which echoes the 1 the PLC wrote
            self.loop.call_soon(self._clear_coils, done)
        return None

    def _clear_coils(self, mask: int) -> None:
        with self.lock:
            self.coils &= ~mask

    def _ignored_trigger(self) -> None:
        self.ignored += 1
        if self.ignored == 1:
            self.context.log(
                "warning: modbus: the PLC set the trigger coil, but --part-trigger modbus was not "
                "given: no part is made and the coil stays 1; further writes are counted"
            )

    def _totals(self) -> tuple[list[int], Counter]:
        """The run's part counters now (answered, rejected, fail-safe, overflow; per label)."""
        counts = self.context.summary.parts
        if counts is None:
            return [0, 0, 0, 0], Counter()
        with counts.lock:
            totals = [counts.answered, counts.rejected, counts.fail_safe, counts.overflow]
            return totals, Counter(counts.labels)

    def _counter_words(self, totals: tuple[list[int], Counter]) -> list[int]:
        """Holding registers 12-99: the counters since the last reset coil (under the lock)."""
        (now, labels), (then, labels_then) = totals, self.offsets
        values = [a - b for a, b in zip(now, then, strict=True)]
        values += [labels[name] - labels_then[name] for name in self.labels[:MAX_LABELS]]
        words = [w for v in values for w in split32(v)]
        return words + [0] * (PLC_WRITES - COUNTERS - len(words))

    def handle(self, event: PartRecord) -> None:
        """One verdict: the results, then the counters, then the sequence and status."""
        totals = self._totals()  # outside our lock, which every request waits for
        results = verdict_words(event)
        with self.lock:
            self.labels = event.identity.labels
            self.image[CODE : CODE + len(results)] = results
            self.image[COUNTERS:PLC_WRITES] = self._counter_words(totals)
            self.image[SEQUENCE] = (self.image[SEQUENCE] + 1) & 0xFFFF
            valid = (self.image[STATUS] & VALID) ^ VALID
            self.image[STATUS] = valid | verdict_bits(event)

    def _failed(self, exc: Exception) -> None:
        self.context.summary.add_error(self.name)
        if not self.failed_once:
            self.failed_once = True
            self.context.log(
                f"warning: modbus: a request failed ({type(exc).__name__}: {exc}); the PLC got "
                "an error reply, further failures are counted in the summary"
            )

    def close(self) -> None:
        """Stop serving: the port is free when this returns (within CLOSE_S)."""
        if self.thread is None or not self.thread.is_alive():
            return
        stopping = getattr(self, "stopping", None)
        if stopping is not None:
            self.loop.call_soon_threadsafe(stopping.set)
        else:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=CLOSE_S)
        if self.ignored > 1:
            self.context.log(f"modbus: {self.ignored} trigger coil writes made no part")


def shown(host: str) -> str:
    """A host as an address is written: an IPv6 one in brackets."""
    return f"[{host}]" if ":" in host else host


_WHAT = {
    errno.EADDRINUSE: "another program listens there (another edgecls run?): stop it or choose "
    "another port",
    errno.EACCES: "a port below 1024 needs privileges: choose one above it (e.g. 5020), or give "
    "the service CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "no interface of this board has that address: give one of its "
    "addresses, or 0.0.0.0 for all",
}


def cannot_listen(host: str, port: int) -> str:
    """Why the server could not listen, in one line: pymodbus keeps the reason to itself, so
    binding the address once more tells it."""
    where = f"--modbus {shown(host)}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except socket.gaierror as exc:
        return f"{where}: no such host ({exc.strerror}); give an address of this board or 0.0.0.0"
    except OSError as exc:
        what = _WHAT.get(exc.errno, "check the host and port")
        return f"{where}: cannot listen ({exc.strerror}); {what}"
    return f"{where}: cannot listen (the port was busy a moment ago); try again or choose another"


@SINKS.register("modbus")
def make(config):
    return ModbusSink(config) if config.modbus else None
