"""The MQTT client of `edgecls run`, in a process of its own, so paho's Python (a packet built,
sent and acknowledged per record) never holds the interpreter lock the camera loop waits for.

One thread drives everything: the run's pipe and the broker's socket wait in one `select`, and each
batch the run sends goes out corked, as one TCP segment. While batches flow, the acknowledgements of
one are read when the next comes, so the process wakes once a batch, not once per acknowledgement.
With paho's own network thread, every publish woke that thread and the two traded the interpreter
lock per message: this process took 0.19 ms of CPU per record, then 0.14 on one thread, 0.11 with
acknowledgements read a batch at a time (paho's own work per QoS 1 message is most of what is left).

sinks/mqtt.py starts this file as a script: stdlib and paho only, so it starts small and fast.
stdin carries the settings (the first line, JSON: a password never shows on a command line), then
one message a line, `LEAF RETAIN PAYLOAD`. stdout answers with one JSON object a line: `ready` or
`error` once, then `log`, `connected`, `dropped` and, at the end, `lost`. The end of stdin (the
run ends, or its process dies) is the clean stop: status "offline", queued messages flushed for up
to a second. Signals are the run's to handle: a Ctrl-C, a closed terminal or `systemctl stop`
reaches this process too, and it waits for the run to close its stdin rather than drop what is
queued.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import ssl
import sys
import time
import uuid

QOS = 1
DROP_REPORT_SECONDS = 0.5  # overflow counts go back in bulk, not a line per dropped record
RECONNECT_SECONDS = (1.0, 30.0)  # back-off: first wait, doubling up to the last
CLOSE_SECONDS = 1.0  # at the end, queued messages get this long to reach the broker
# one connection attempt (TCP and TLS) blocks this long at most (paho's default: 5 s), so a stop
# during one still reports what never reached the broker before the run gives up on this process
CONNECT_SECONDS = 2.0
# while batches flow (one at least every LINGER of the run's sink), the broker's socket is not
# waited on: its acknowledgements are read when the next batch comes, or after this long
ACK_SECONDS = 0.1
# QoS 1 messages sent before any acknowledgement (paho's default: 20): a whole batch goes out at
# once (the run's sink ends its linger when its queue, 64 by default, is half full), so none waits
# for the next batch's acknowledgements to be read
INFLIGHT = 100
# this process gives way to the camera loop, whose frame path is the board's bottleneck: woken
# while every core is busy, it waits for an idle moment instead of preempting the loop (the line
# benchmark, paired in one run against nice 0: about +1.5 points, near this VM's noise). Nice 10
# still weighs a tenth of a nice-0 thread, so on cores the loop keeps full it is owed ~10 % of one:
# ~1000 records a second here, a few hundred on a Pi's slower cores, well above a camera's rate;
# nice 19 (1.5 %) would not keep up with a fast loop. Relative: under systemd's Nice=-5, it is 5.
NICE = 10
CORK = getattr(socket, "TCP_CORK", None)  # Linux: hold a batch's packets for one segment
# CONNACK refusals (paho's names, MQTT 3.1.1 and 5) that the --mqtt URL's user:password can mend
AUTH_REFUSALS = frozenset({"Not authorized", "Bad user name or password"})
AUTH_HINT = "; check the user and password in --mqtt"
MAX_FLEET_BYTES = 16384  # a rollout or a board's model state: a few hundred bytes


class Bridge:
    def __init__(self, settings: dict, out):
        self.s = settings
        self.out = out
        self.client = None
        self.connected = False
        self.ever_connected = self.absent_said = self.overflow_said = self.tls_said = False
        self.refused_said: set[str] = set()  # the broker's reasons, each said once
        # published, not yet acknowledged (one thread: an acknowledgement is only read in
        # loop_read, so it never comes before publish() has returned the message id)
        self.pending: set[int] = set()
        self.dropped, self.dropped_at = 0, 0.0
        self.closing = False  # our own disconnect is not a lost broker
        self.delay = RECONNECT_SECONDS[0]
        self.next_try = 0.0  # monotonic time of the next connection attempt
        self.queue_full = None  # paho's code for a full offline queue
        self.sent_at = -ACK_SECONDS  # monotonic time of the last batch

    def tell(self, **message) -> None:
        """A report to the run; none once the run is gone (killed: its pipe is broken), as this
        process then only ends."""
        with contextlib.suppress(OSError, ValueError):
            self.out.write(json.dumps(message) + "\n")
            self.out.flush()

    def topic(self, leaf: str) -> str:
        return f"{self.s['prefix']}/{leaf}"

    def open(self) -> None:
        import paho.mqtt.client as mqtt

        s = self.s
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s["client_id"] or f"edgecls-{uuid.uuid4().hex[:8]}",
        )
        if s["username"]:
            client.username_pw_set(s["username"], s["password"])
        if s["tls"]:
            client.tls_set(ca_certs=s["ca"], certfile=s["cert"], keyfile=s["key"])
        client.will_set(self.topic("status"), "offline", qos=QOS, retain=True)
        client.max_queued_messages_set(s["queue"])
        client.max_inflight_messages_set(INFLIGHT)
        client.connect_timeout = CONNECT_SECONDS
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(s["host"], s["port"], keepalive=30)
        self.client = client
        self.queue_full = mqtt.MQTT_ERR_QUEUE_SIZE

    def _where(self) -> str:
        return f"{self.s['host']}:{self.s['port']}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if str(reason_code) not in self.refused_said:  # once per reason, not every retry
                self.refused_said.add(str(reason_code))
                hint = AUTH_HINT if str(reason_code) in AUTH_REFUSALS else ""
                self.tell(
                    log=f"warning: mqtt {self._where()} refused us ({reason_code}){hint}; "
                    "retrying meanwhile"
                )
            return
        self.refused_said.clear()  # a refusal after this connection is news again
        for leaf in self.s.get("subscribe", ()):  # again on every connection: a clean session
            client.subscribe(self.topic(leaf), qos=QOS)
        for topic in self.s.get("listen", ()):  # a fleet's: whole topics, retained ones wanted
            client.subscribe(topic, qos=QOS)
        birth = {"state": "online", "time": round(time.time(), 3), **self.s["identity"]}
        self._track(client.publish(self.topic("status"), "online", qos=QOS, retain=True))
        self._track(client.publish(self.topic("info"), json.dumps(birth), qos=QOS, retain=True))
        self.tell(
            log=f"mqtt: {'re' if self.ever_connected else ''}connected to {self._where()}, "
            f"topics {self.s['prefix']}/...",
            connected=True,
        )
        self.ever_connected = self.connected = True
        self.delay = RECONNECT_SECONDS[0]

    def _on_message(self, client, userdata, message) -> None:
        """A command for the run (`PREFIX/trigger`): passed on as it came, the sink reads it. A
        retained message is an old command the broker replays on every (re)connection: not a
        part in front of the camera now. A fleet's topics (`listen`) pass retained ones too: a
        rollout is meant for a board that was away when it was published."""
        import paho.mqtt.client as mqtt

        if any(mqtt.topic_matches_sub(f, message.topic) for f in self.s.get("listen", ())):
            if len(message.payload) <= MAX_FLEET_BYTES:
                payload = message.payload.decode("utf-8", "replace")
                self.tell(fleet={"topic": message.topic, "payload": payload})
            return
        if message.retain:
            return
        leaf = message.topic.removeprefix(self.s["prefix"] + "/")
        payload = message.payload  # a cut message would give a made-up id: too long, none
        self.tell(
            message={
                "leaf": leaf,
                "payload": "" if len(payload) > 4096 else payload.decode("utf-8", "replace"),
            }
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self.closing:
            self.tell(
                log=f"mqtt: lost the broker ({reason_code}); reconnecting, keeping up to "
                f"{self.s['queue']} messages meanwhile",
                connected=False,
            )
        self.connected = False
        self._back_off()

    def _back_off(self) -> None:
        self.next_try = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, RECONNECT_SECONDS[1])

    def _connect(self) -> None:
        """One attempt (paho's reconnect: TCP, TLS, CONNECT); the answer is read by the loop.
        While it blocks (an unreachable host: up to CONNECT_SECONDS), records wait in the pipe,
        which the run made large enough for that."""
        try:
            self.client.reconnect()
        except ssl.SSLError as exc:  # a broker answered, but not with a certificate we trust
            self._back_off()
            if not self.tls_said:
                self.tls_said = True
                self.tell(
                    log=f"warning: mqtt: TLS with {self._where()} failed "
                    f"({exc.reason or exc}); check --mqtt-ca (and the broker's certificate and "
                    "host name); retrying meanwhile"
                )
        except OSError:
            self._back_off()
            if not self.ever_connected and not self.absent_said:
                self.absent_said = True
                self.tell(
                    log=f"mqtt: no broker at {self._where()} yet; the loop runs on, keeping up "
                    f"to {self.s['queue']} messages until it answers"
                )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.pending.discard(mid)

    def publish(self, leaf: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(self.topic(leaf), payload, qos=QOS, retain=retain)
        if info.rc == self.queue_full:
            self._drop()
            return
        self._track(info)

    def publish_lines(self, lines: list[bytes]) -> None:
        """A batch from the run: `LEAF RETAIN PAYLOAD` each, sent as one segment."""
        self.sent_at = time.monotonic()
        with self._corked():
            for line in lines:
                leaf, retain, payload = line.split(b" ", 2)
                self.publish(leaf.decode(), payload, retain == b"1")

    @contextlib.contextmanager
    def _corked(self):
        sock = self.client.socket()
        if CORK is None or sock is None:
            yield
            return
        sock.setsockopt(socket.IPPROTO_TCP, CORK, 1)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # the connection went meanwhile
                sock.setsockopt(socket.IPPROTO_TCP, CORK, 0)

    def _track(self, info) -> None:
        """Every QoS 1 message we send is pending until acknowledged."""
        self.pending.add(info.mid)

    def step(self, inputs: list, timeout: float) -> list:
        """Connect when it is time, wait for `inputs` or the broker, and let paho read, write
        and ping; returns the inputs that are ready."""
        c = self.client
        if c.socket() is None and time.monotonic() >= self.next_try:
            self._connect()
        sock, now = c.socket(), time.monotonic()
        if sock is None:
            timeout = min(timeout, max(0.0, self.next_try - now))
        # records flowing: acknowledgements wait for the next batch (a lost broker still shows
        # then, as the read fails); otherwise the socket wakes us
        flowing = (
            sock is not None
            and bool(inputs)
            and now - self.sent_at < ACK_SECONDS
            and len(self.pending) < INFLIGHT  # else acknowledgements release queued messages
        )
        if flowing:
            timeout = min(timeout, self.sent_at + ACK_SECONDS - now)
        reads = [*inputs, sock] if sock is not None and not flowing else inputs
        writes = [sock] if sock is not None and c.want_write() else []
        decrypted = sock is not None and hasattr(sock, "pending") and sock.pending() > 0
        ready, writable, _ = select.select(reads, writes, [], 0.0 if decrypted else timeout)
        if sock is not None:
            if flowing or sock in ready or decrypted:  # TLS may hold a record select() can't see
                c.loop_read()
            if sock in writable and c.socket() is not None:
                c.loop_write()
            if c.socket() is not None:
                c.loop_misc()
        return [r for r in ready if r is not sock]

    def serve(self, fd: int, rest: bytes = b"") -> None:
        """Until the run closes the pipe: its lines to the broker."""
        data = b""
        while True:
            *lines, rest = (rest + data).split(b"\n")
            if lines:
                self.publish_lines(lines)
            while not self.step([fd], 1.0):
                pass
            if not (data := os.read(fd, 1 << 16)):
                return

    def _drop(self) -> None:
        self.dropped += 1
        if not self.overflow_said:
            self.overflow_said = True
            self.tell(
                log=f"warning: mqtt queue full ({self.s['queue']} messages waiting for the "
                "broker); further records are dropped and counted"
            )
        self.report_drops(time.monotonic() - self.dropped_at < DROP_REPORT_SECONDS)

    def report_drops(self, later: bool = False) -> None:
        if self.dropped and not later:
            self.tell(dropped=self.dropped)
            self.dropped, self.dropped_at = 0, time.monotonic()

    def close(self) -> None:
        self.report_drops()
        self.closing = True
        try:
            if self.connected:
                self._track(
                    self.client.publish(self.topic("status"), "offline", qos=QOS, retain=True)
                )
                deadline = time.monotonic() + CLOSE_SECONDS  # queued records reach the broker
                while self.pending and self.connected and time.monotonic() < deadline:
                    self.step([], max(0.0, deadline - time.monotonic()))
            if self.client.socket() is not None:
                self.client.disconnect()
                self.client.loop_write()  # the DISCONNECT goes out now, and paho closes
        except Exception as exc:  # the summary must still learn what was lost
            self.tell(log=f"warning: mqtt close: {type(exc).__name__}: {exc}")
        self.tell(lost=len(self.pending))


def main() -> int:
    with contextlib.suppress(OSError):  # allowed to anyone on POSIX; a sandbox that forbids it: 0
        os.nice(NICE)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    fd = sys.stdin.fileno()  # read raw: a buffered reader would keep lines select() cannot see
    head = b""
    while b"\n" not in head and (data := os.read(fd, 1 << 16)):
        head += data
    settings, _, rest = head.partition(b"\n")
    bridge = Bridge(json.loads(settings), sys.stdout)
    try:
        bridge.open()
    except Exception as exc:  # e.g. an unreadable certificate: the run says so and stops
        bridge.tell(error=f"{type(exc).__name__}: {exc}")
        return 1
    bridge.tell(ready=True)
    bridge.serve(fd, rest)
    bridge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
