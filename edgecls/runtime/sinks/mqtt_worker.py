"""The MQTT client of `edgecls run`, in a process of its own, so paho's Python (a packet built,
sent and acknowledged per record) never holds the interpreter lock the camera loop waits for.

sinks/mqtt.py starts this file as a script: stdlib and paho only, so it starts small and fast.
stdin carries the settings (the first line, JSON: a password never shows on a command line), then
one message a line, `LEAF RETAIN PAYLOAD`. stdout answers with one JSON object a line: `ready` or
`error` once, then `log`, `connected`, `dropped` and, at the end, `lost`. The end of stdin (the
run ends, or its process dies) is the clean stop: status "offline", queued messages flushed for up
to a second. Signals are the run's to handle: a Ctrl-C or `systemctl stop` reaches this process
too, and it waits for the run to close its stdin rather than drop what is queued.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid

QOS = 1
DROP_REPORT_SECONDS = 0.5  # overflow counts go back in bulk, not a line per dropped record


class Bridge:
    def __init__(self, settings: dict, out):
        self.s = settings
        self.out = out
        self.out_lock = threading.Lock()
        self.client = None
        self.connected = threading.Event()
        self.ever_connected = self.absent_said = self.overflow_said = False
        self.lock = threading.Lock()
        self.pending: set[int] = set()  # published, not yet acknowledged by the broker
        self.acked: set[int] = set()  # acknowledged before publish() returned its mid
        self.dropped, self.dropped_at = 0, 0.0
        self.closing = False  # our own disconnect is not a lost broker

    def tell(self, **message) -> None:
        with self.out_lock:
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
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.connect_async(s["host"], s["port"], keepalive=30)
        client.loop_start()
        self.client = client

    def _where(self) -> str:
        return f"{self.s['host']}:{self.s['port']}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.tell(log=f"mqtt {self._where()} refused us ({reason_code})")
            return
        birth = {"state": "online", "time": round(time.time(), 3), **self.s["identity"]}
        self._track(client.publish(self.topic("status"), "online", qos=QOS, retain=True))
        self._track(client.publish(self.topic("info"), json.dumps(birth), qos=QOS, retain=True))
        self.tell(
            log=f"mqtt: {'re' if self.ever_connected else ''}connected to {self._where()}, "
            f"topics {self.s['prefix']}/...",
            connected=True,
        )
        self.ever_connected = True
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self.closing:
            self.connected.clear()
            self.tell(
                log=f"mqtt: lost the broker ({reason_code}); reconnecting, keeping up to "
                f"{self.s['queue']} messages meanwhile",
                connected=False,
            )

    def _on_connect_fail(self, client, userdata) -> None:
        if not self.ever_connected and not self.absent_said:
            self.absent_said = True
            self.tell(
                log=f"mqtt: no broker at {self._where()} yet; the loop runs on, keeping up to "
                f"{self.s['queue']} messages until it answers"
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid in self.pending:
                self.pending.discard(mid)
            else:
                self.acked.add(mid)

    def publish(self, leaf: str, payload: bytes, retain: bool) -> None:
        import paho.mqtt.client as mqtt

        info = self.client.publish(self.topic(leaf), payload, qos=QOS, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._drop()
            return
        self._track(info)

    def _track(self, info) -> None:
        """Every QoS 1 message we send is pending until acknowledged (a stale acknowledged id
        would otherwise match a later message once paho's ids wrap at 65535)."""
        with self.lock:
            if info.mid in self.acked:
                self.acked.discard(info.mid)
            else:
                self.pending.add(info.mid)

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
        was_connected = self.connected.is_set()
        try:
            if was_connected:
                self._track(
                    self.client.publish(self.topic("status"), "offline", qos=QOS, retain=True)
                )
                deadline = time.monotonic() + 1.0  # let queued records reach the broker
                while self.pending and time.monotonic() < deadline:
                    time.sleep(0.02)
            self.client.disconnect()
        except Exception as exc:  # the summary must still learn what was lost
            self.tell(log=f"warning: mqtt close: {type(exc).__name__}: {exc}")
        # paho's thread may sit in its back-off for a second when no broker answers
        stopper = threading.Thread(target=self.client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(timeout=1.0 if was_connected else 0.1)
        with self.lock:
            self.tell(lost=len(self.pending))


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    bridge = Bridge(json.loads(stdin.readline()), sys.stdout)
    try:
        bridge.open()
    except Exception as exc:  # e.g. an unreadable certificate: the run says so and stops
        bridge.tell(error=f"{type(exc).__name__}: {exc}")
        return 1
    bridge.tell(ready=True)
    for line in stdin:
        leaf, retain, payload = line.rstrip(b"\n").split(b" ", 2)
        bridge.publish(leaf.decode(), payload, retain == b"1")
    bridge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
