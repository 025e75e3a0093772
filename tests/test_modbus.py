"""--modbus: a real pymodbus client plays the PLC against the real server, a real station makes
the parts, and the test plays the camera (synthetic records for the parts the coil made)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mjpeg_server import free_port
from pymodbus.client import ModbusTcpClient

import edgecls.runtime.sinks.modbus as modbus  # registers the sink
from edgecls.errors import EdgeclsError
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.parts import Station
from edgecls.runtime.records import Identity, PartCounts, Record, Summary
from edgecls.runtime.sinks import SinkContext, build_sinks

LABELS = ("ok", "def")
ID = Identity("casting", "model_int8.tflite", "ab" * 32, LABELS)
# status bits, as holding register 1 and discrete inputs 0-5 hold them
READY, BUSY, VALID, PASS, FAIL, FAIL_SAFE = (1 << i for i in range(6))


def record(i: int, label: str, conf: float = 0.9) -> Record:
    p = (conf, 1 - conf) if label == "ok" else (1 - conf, conf)
    return Record(i, time.time(), label, label, conf, p, 1.5, "cam", ID)


def config(tmp_path: Path, port: int, **options):
    options = {"part_trigger": ["modbus"], "trigger": "def", **options}
    return LoopOptions(
        bundle=Path("b"),
        headless=True,
        modbus=f"127.0.0.1:{port}",
        part_state=str(tmp_path / "ids"),
        **options,
    ).to_config()


def context(logs: list) -> SinkContext:
    return SinkContext(summary=Summary(), stop=threading.Event(), log=logs.append, identity=ID)


@dataclass
class Line:
    """The run's side (station, outputs) and the PLC's (a Modbus client)."""

    station: Station
    sink: modbus.ModbusSink
    plc: ModbusTcpClient
    logs: list
    port: int

    def registers(self, address: int = 0, count: int = 20, fc: int = 3) -> list[int]:
        read = self.plc.read_holding_registers if fc == 3 else self.plc.read_input_registers
        reply = read(address, count=count)
        assert not reply.isError(), reply
        return reply.registers

    def inputs(self) -> int:
        bits = self.plc.read_discrete_inputs(0, count=6).bits
        return sum(1 << i for i, on in enumerate(bits[:6]) if on)

    def coils(self) -> list[bool]:
        return self.plc.read_coils(0, count=2).bits[:2]

    def trigger(self, plc_id: int, encoder: int) -> None:
        """The PLC's side of a trigger: its id and encoder count, then the coil."""
        words = [*modbus.split32(plc_id), *modbus.split32(encoder)]
        assert not self.plc.write_registers(100, words).isError()
        reply = self.plc.write_coil(0, True)
        assert not reply.isError() and reply.bits[:1] == [True]  # the standard echo

    def verdict(self, after: int, timeout: float = 5.0) -> list[int]:
        """Registers 0-23 once the sequence moved past `after` (polled, as a PLC does: the whole
        block in one request)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            regs = self.registers(0, 24)
            if regs[2] != after:
                return regs
            time.sleep(0.002)
        raise AssertionError(f"no verdict after sequence {after}")


def wait_for(what, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def line(tmp_path: Path, **options):
    """A station with its outputs open as the loop opens them, and a connected PLC."""
    port = free_port()
    cfg = config(tmp_path, port, **options)
    logs: list = []
    ctx = context(logs)
    station = Station(cfg.parts, ID, PartCounts())
    ctx.station, ctx.summary.parts = station, station.counts
    sinks = build_sinks(cfg, ctx).open()
    assert sinks.names == ["modbus"]
    station.start(sinks.publish, "cam")
    plc = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert plc.connect()
        yield Line(station, sinks.runners[0].sink, plc, logs, port)
    finally:
        plc.close()
        station.close()
        sinks.close()


def word32(regs: list[int], at: int) -> int:
    return (regs[at] << 16) | regs[at + 1]


def test_plc_handshake_reads_each_verdict_and_the_counters(tmp_path):
    with line(tmp_path) as ln:
        assert any("modbus: serving 127.0.0.1:" in m for m in ln.logs)
        regs = ln.registers(0, 104)
        assert regs[1] & READY and not regs[1] & BUSY and regs[2] == 0 and regs[3] == 0
        seq = regs[2]
        t0 = time.monotonic()
        ln.trigger(4711, -5)
        part = ln.station.current()  # made before the coil write's reply came back
        assert part is not None and part.origin == "modbus"
        assert (part.plc_id, part.encoder) == (4711, -5)
        assert part.at - t0 < 0.05, f"coil write to trigger took {(part.at - t0) * 1000:.1f} ms"
        assert wait_for(lambda: ln.coils() == [False, False])  # taken: the coil is back to 0
        assert ln.inputs() & BUSY and ln.registers()[1] & BUSY
        ln.station.add_frame(part, record(1, "def", 0.93), time.monotonic())
        regs = ln.verdict(seq)
        assert regs[2] == seq + 1 and regs[1] & (VALID | FAIL) == VALID | FAIL
        assert not regs[1] & (PASS | FAIL_SAFE | BUSY)
        assert regs[3] == LABELS.index("def") + 1 and regs[4] == 930
        assert word32(regs, 5) == part.id
        assert word32(regs, 7) == 4711 and word32(regs, 9) == 0xFFFFFFFB  # -5, two's complement
        assert 0 <= regs[11] < 1000
        assert [word32(regs, a) for a in (12, 14, 16, 18)] == [1, 1, 0, 0]
        assert ln.inputs() == regs[1] & 0x3F | READY
        assert ln.registers(0, 24, fc=4)[2:] == regs[2:]  # input registers mirror the results

        ln.trigger(4712, 70000)
        part2 = ln.station.current()
        assert part2.id == part.id + 1 and part2.encoder == 70000
        ln.station.add_frame(part2, record(2, "ok", 0.8), time.monotonic())
        regs = ln.verdict(seq + 1)
        assert not regs[1] & VALID, "ResultValid toggles with every verdict"
        assert regs[1] & PASS and not regs[1] & (FAIL | FAIL_SAFE)
        assert regs[3] == LABELS.index("ok") + 1 and regs[4] == 800
        assert (word32(regs, 5), word32(regs, 7), word32(regs, 9)) == (part2.id, 4712, 70000)
        assert [word32(regs, a) for a in (12, 14, 16, 18)] == [2, 1, 0, 0]
        assert [word32(regs, 20 + 2 * i) for i in range(2)] == [1, 1]  # ok 1, def 1


def test_only_the_plc_registers_and_the_two_coils_take_writes(tmp_path):
    with line(tmp_path) as ln:
        assert ln.plc.write_register(3, 7).isError()
        assert ln.plc.write_coil(2, True).isError()
        assert not ln.plc.write_register(101, 9).isError()
        assert ln.registers(100, 4) == [0, 9, 0, 0] and ln.registers(3, 1) == [0]
        # a frame record is not the sink's business; a part record is
        assert not ln.sink.wants(record(0, "def"))
        assert ln.station.current() is None


def test_a_part_without_a_verdict_in_its_window_reads_fail_safe(tmp_path):
    with line(tmp_path, inspect_window_ms=30) as ln:
        ln.trigger(7, 1)
        regs = ln.verdict(0)
        assert regs[3] == modbus.FAIL_SAFE_CODE and regs[4] == 0
        assert regs[1] & (FAIL | FAIL_SAFE) == FAIL | FAIL_SAFE and not regs[1] & PASS
        assert regs[11] >= 30
        assert [word32(regs, a) for a in (12, 14, 16, 18)] == [1, 1, 1, 0]


def test_the_reset_coil_zeroes_the_plc_counters_not_the_runs(tmp_path):
    with line(tmp_path) as ln:
        for i in range(2):
            ln.trigger(i, i)
            ln.station.add_frame(ln.station.current(), record(i, "def"), time.monotonic())
            ln.verdict(i)
        assert word32(ln.registers(), 12) == 2
        assert not ln.plc.write_coil(1, True).isError()
        assert wait_for(lambda: ln.coils() == [False, False])
        regs = ln.registers(0, 24)
        assert regs[12:24] == [0] * 12 and regs[3] == LABELS.index("def") + 1
        assert ln.station.counts.answered == 2  # the run's own counters stay
        ln.trigger(9, 9)
        ln.station.add_frame(ln.station.current(), record(9, "ok"), time.monotonic())
        regs = ln.verdict(2)
        assert [word32(regs, a) for a in (12, 14, 20, 22)] == [1, 0, 1, 0]


def test_the_heartbeat_counts_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(modbus, "HEARTBEAT_S", 0.05)
    with line(tmp_path) as ln:
        first = ln.registers(0, 1)[0]
        wait_for(lambda: ln.registers(0, 1)[0] >= first + 2, timeout=2.0)


def test_a_trigger_coil_without_part_trigger_modbus_makes_no_part(tmp_path):
    # the interval trigger is started by the loop, not here: no part comes from it in this test
    with line(tmp_path, part_trigger=["interval:1000"]) as ln:
        ln.trigger(1, 1)
        ln.trigger(2, 2)
        assert ln.station.current() is None and ln.station.counts.answered == 0
        assert ln.coils() == [True, False]  # not taken: the PLC's handshake times out
        warnings = [m for m in ln.logs if "--part-trigger modbus" in m]
        assert len(warnings) == 1 and warnings[0].startswith("warning: modbus:")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_port_in_use_is_one_line_and_leaves_nothing_behind(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cfg = config(tmp_path, port)
        threads = set(threading.enumerate())
        with pytest.raises(EdgeclsError) as error:
            build_sinks(cfg, context([])).open()
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"--modbus 127.0.0.1:{port}: ")
    assert "choose another port" in message
    wait_for(lambda: set(threading.enumerate()) <= threads, timeout=2.0)
    assert not listening(port)


def test_a_privileged_port_says_so(tmp_path):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 502))
        except PermissionError:
            pass
        else:
            pytest.skip("this user may bind port 502")
    with pytest.raises(EdgeclsError, match=r"^--modbus 127.0.0.1:502: .*privileges"):
        build_sinks(config(tmp_path, 502), context([])).open()


def test_close_frees_the_port_at_once(tmp_path):
    port = free_port()
    cfg = config(tmp_path, port)
    plc = ModbusTcpClient("127.0.0.1", port=port, timeout=1)
    for _ in range(2):  # the second server binds the port the first one had
        sinks = build_sinks(cfg, context([])).open()
        assert plc.connect() and not plc.read_holding_registers(0, count=1).isError()
        t0 = time.monotonic()
        sinks.close()
        assert time.monotonic() - t0 < 1.5
        assert not listening(port)
        plc.close()
