"""MQTT: records and decisions to a broker, so a PLC, Node-RED or a dashboard can act on them.

Topics under the URL's prefix: `PREFIX/records` (one JSON record per classified frame, unless
--mqtt-publish decisions), `PREFIX/decisions`, `PREFIX/drift` and, while a candidate model runs
beside the active one, `PREFIX/shadow` (its agreement, latency, label mix; both retained, on a
change of state, every 10 s and at the end) and `PREFIX/status` (retained: "online" on connect,
"offline" as the broker-held last will and on a clean stop). QoS 1. The client runs in a process of
its own (mqtt_worker.py, at nice +10, so it gives way to the loop): paho connects, reconnects with
back-off and keeps up to --mqtt-queue messages while the broker is away, and what does not fit is
counted; here each batch of records is one write to its pipe, and its reports come back as logs and
counters.

With --group (a fleet, edgecls/fleet.py) the board's topics are `PREFIX/boards/BOARD/...`, its
model state goes out retained on `PREFIX/boards/BOARD/model` after every change, and the group's
rollout (`PREFIX/rollouts/GROUP`) and the other boards' states come in, retained ones too, for the
board's fleet (runtime/models/fleet.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.fleet import board_prefix, rollout_topic
from edgecls.runtime.parts.triggers import plc_fields
from edgecls.runtime.records import Decision, PartRecord, Record
from edgecls.runtime.sinks import SINKS, Sink, SinkContext

WORKER = Path(__file__).with_name("mqtt_worker.py")
# Run by path, not as `-m` (which would import numpy with the package) nor as a plain script
# (whose folder would come first on sys.path, where any module could shadow a library's).
LAUNCH = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
START_SECONDS = 10.0  # a board's first Python start may be slow (SD card)
# the worker flushes for <= 1 s, or ends a connection attempt (<= 2 s) and reports what it lost
STOP_SECONDS = 3.0
# the pipe holds records while the client waits on a connection attempt (an unreachable host: up
# to 2 s), ~2500 records; Linux lets any process ask for 1 MiB
PIPE_BYTES = 1 << 20
# a client that died is started again after this long: the first wait, doubling up to the last
RESTART_SECONDS = (1.0, 60.0)
# the summary's states published retained under their own topic: drift, a candidate's shadow
STATES = ("drift", "shadow")


class MqttSink(Sink):
    name = "mqtt"
    # records go out in bursts (one pipe write, one wake-up for each), <= 50 ms late; a decision
    # does not wait (SinkRunner ends the linger for it)
    linger = 0.05

    def __init__(self, config):
        self.config = config.mqtt
        self.context: SinkContext | None = None
        self.proc: subprocess.Popen | None = None
        self.connected = threading.Event()
        self.ready = threading.Event()
        self.error: str | None = None
        self.reader: threading.Thread | None = None
        self.last_state = {name: (None, 0.0) for name in STATES}  # (state, when) sent
        self.unflushed = 0  # messages written since the last flush: lost if the client died
        self.restart_delay, self.next_start = RESTART_SECONDS[0], 0.0
        self.closing = False
        self.fleet = None  # with --group

    def open(self, context: SinkContext) -> None:
        self.context = context
        if self.config.group and context.models is not None:
            from edgecls.runtime.models.fleet import Fleet

            c = self.config
            self.fleet = Fleet(context.models, c.group, c.board, self._publish_model, context.log)
        if not self._start():
            c = self.config
            raise EdgeclsError(
                f"--mqtt {c.host}:{c.port}: the MQTT client did not start "
                f"({self.error or 'no answer'}); check the --mqtt-* options"
            )

    def _start(self) -> bool:
        """A client process, given its settings; True once it says it is ready."""
        c = self.config
        settings = {
            "host": c.host, "port": c.port, "prefix": self._prefix(), "tls": c.tls,
            "username": c.username, "password": c.password, "client_id": c.client_id,
            "ca": _path(c.ca), "cert": _path(c.cert), "key": _path(c.key), "queue": c.queue,
            "identity": self.context.identity.to_dict(), "subscribe": self._subscriptions(),
            "listen": self._listen(),
        }  # fmt: skip
        self.ready.clear()
        self.error = None
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        with contextlib.suppress(ImportError, AttributeError, OSError):  # not Linux: 64 KiB
            import fcntl

            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.reader = threading.Thread(
            target=self._read_reports, args=(proc,), name="mqtt-reports", daemon=True
        )
        self.reader.start()
        with contextlib.suppress(OSError):  # it died at start: the report below says why
            proc.stdin.write(json.dumps(settings).encode() + b"\n")
            proc.stdin.flush()
        if self.ready.wait(START_SECONDS) and not self.error:
            if self.fleet is not None:  # a new client: the board's state, retained, again
                self.fleet.changed("")
            return True
        self._stop_client()
        return False

    def _read_reports(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if "log" in report:
                self.context.log(report["log"])
            if "message" in report:
                self._command(report["message"])
            if "fleet" in report and self.fleet is not None:
                self.fleet.receive(report["fleet"]["topic"], report["fleet"]["payload"])
            if report.get("connected") is True:
                self.connected.set()
            elif report.get("connected") is False:
                self.connected.clear()
            if report.get("dropped"):
                self.context.summary.add_dropped(self.name, report["dropped"])
            if report.get("lost"):
                self.context.summary.add_dropped(self.name, report["lost"])
                self.context.log(
                    f"warning: mqtt: {report['lost']} messages never reached the broker"
                )
            if "error" in report:
                self.error = report["error"]
            if "ready" in report or "error" in report:
                self.ready.set()
        if proc is self.proc:  # it ended: _start() must not wait for nothing
            self.ready.set()

    def _subscriptions(self) -> list[str]:
        station = self.context.station
        parts = station is not None and station.config.accepts("mqtt")
        return [*(["trigger"] if parts else []), *(["deploy"] if self.context.models else [])]

    def _prefix(self) -> str:
        c = self.config
        return board_prefix(c.prefix, c.board) if self.fleet is not None else c.prefix

    def _listen(self) -> list[str]:
        """Whole topics (filters) whose messages, retained too, go to the fleet."""
        if self.fleet is None:
            return []
        c = self.config
        return [rollout_topic(c.prefix, c.group), f"{c.prefix}/boards/+/model"]

    def _publish_model(self, payload: dict) -> None:
        """The board's model state, from the models thread (a whole line per write: the pipe's
        buffered writer takes one thread at a time). A client found dead is the sink's to revive,
        and it publishes the state again."""
        line = f"model 1 {json.dumps(payload)}\n".encode()
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.proc.stdin.write(line)
            self.proc.stdin.flush()

    def _command(self, message: dict) -> None:
        if message.get("leaf") == "deploy":  # a model command: the manager logs what it does
            code, answer = self.context.models.command(message.get("payload", ""), "mqtt deploy")
            if code >= 400:
                self.context.log(f"model: mqtt deploy refused: {answer['error']}")
        elif message.get("leaf") == "trigger":
            plc_id, encoder = plc_fields(message.get("payload", ""))
            self.context.station.trigger("mqtt", plc_id, encoder)

    def send(self, leaf: str, payload: dict, retain: bool = False) -> None:
        line = f"{leaf} {int(retain)} {json.dumps(payload)}\n".encode()
        try:
            self.proc.stdin.write(line)
        except (OSError, ValueError):  # its pipe is gone, or closed after a failed start
            self._revive(extra=1)  # this message, too
            return
        self.unflushed += 1

    def handle(self, event) -> None:
        if isinstance(event, PartRecord):
            self.send("parts", event.to_dict())
        elif isinstance(event, Decision):
            self.send("decisions", event.to_dict())
        elif isinstance(event, Record) and self.config.publish == "frames":
            self.send("records", event.to_dict())

    def flush(self) -> None:
        """After each batch: the drift state if due, then one write to the worker for all."""
        self._maybe_states()
        try:
            self.proc.stdin.flush()
        except (OSError, ValueError):
            self._revive()
            return
        self.unflushed = 0

    def _revive(self, extra: int = 0) -> None:
        """The client process died (killed, out of memory): what it held is lost, what found it
        gone is counted, and a new one is started, at most once per back-off step, so a board
        that runs for months does not stay silent on MQTT after one crash."""
        lost, self.unflushed = self.unflushed + extra, 0
        self.context.summary.add_dropped(self.name, lost)
        if self.closing or time.monotonic() < self.next_start:
            return
        self._stop_client()  # reaped: its exit code is known
        code = self.proc.returncode
        self.connected.clear()
        self.context.log(
            f"warning: mqtt: the client process ended (exit {code}); what it had not sent is "
            "lost (what found it gone is counted as dropped); starting a new one"
        )
        if self._start():
            self.restart_delay = RESTART_SECONDS[0]
        else:
            self.restart_delay = min(self.restart_delay * 2, RESTART_SECONDS[1])
        self.next_start = time.monotonic() + self.restart_delay

    def _maybe_states(self, final: bool = False) -> None:
        """The run's states (STATES): each on a change of state, every 10 s, and at the end
        (Sinks.close has closed the drift sink, which runs first, before this one)."""
        for name in STATES:
            value = getattr(self.context.summary, name)
            state, last = self.last_state[name]
            due = final or value.get("state") != state or time.monotonic() - last >= 10
            if value and due:
                self.last_state[name] = (value.get("state"), time.monotonic())
                self.send(name, value, retain=True)

    def close(self) -> None:
        self.closing = True  # a client found dead now is not started again
        if self.proc is None:
            return
        if self.ready.is_set() and not self.error and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):  # gone already: what it said before is counted
                self._maybe_states(final=True)  # the retained states are the run's last
        self._stop_client()

    def _stop_client(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # the worker's end of input: flush, "offline", stop
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.context.log("warning: mqtt: the client did not stop in time; stopped it")
        self.reader.join(1.0)


def _path(p: Path | None) -> str | None:
    return str(p) if p else None


@SINKS.register("mqtt")
def make(config):
    return MqttSink(config) if config.mqtt else None
