"""MQTT: records and decisions to a broker, so a PLC, Node-RED or a dashboard can act on them.

Topics under the URL's prefix: `PREFIX/records` (one JSON record per classified frame, unless
--mqtt-publish decisions), `PREFIX/decisions`, `PREFIX/drift` (retained, on change and every 10 s)
and `PREFIX/status` (retained: "online" on connect, "offline" as the broker-held last will and on a
clean stop). QoS 1. paho's network thread (`loop_start`) connects, reconnects with back-off and
keeps up to --mqtt-queue messages while the broker is away; what does not fit is counted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from edgecls.runtime.records import Decision, Record
from edgecls.runtime.sinks import SINKS, SinkContext, describe

QOS = 1


class MqttSink:
    name = "mqtt"
    wants_images = False
    linger = 0.02  # records go out in bursts: fewer wake-ups of paho's thread, 20 ms later

    def __init__(self, config):
        self.config = config.mqtt
        self.client = None
        self.context: SinkContext | None = None
        self.connected = threading.Event()
        self.ever_connected = False
        self.lock = threading.Lock()
        self.pending: set[int] = set()  # published, not yet acknowledged by the broker
        self.acked: set[int] = set()  # acknowledged before publish() returned its mid
        self.overflow_reported = False
        self.last_drift: tuple[str | None, float] = (None, 0.0)

    def topic(self, leaf: str) -> str:
        return f"{self.config.prefix}/{leaf}"

    def open(self, context: SinkContext) -> None:
        import paho.mqtt.client as mqtt

        self.context = context
        c = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=c.client_id or f"edgecls-{uuid.uuid4().hex[:8]}",
        )
        if c.username:
            client.username_pw_set(c.username, c.password)
        if c.tls:
            client.tls_set(
                ca_certs=str(c.ca) if c.ca else None,
                certfile=str(c.cert) if c.cert else None,
                keyfile=str(c.key) if c.key else None,
            )
        client.will_set(self.topic("status"), "offline", qos=QOS, retain=True)
        client.max_queued_messages_set(c.queue)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.connect_async(c.host, c.port, keepalive=30)
        client.loop_start()
        self.client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._say(f"mqtt {self.config.host}:{self.config.port} refused us ({reason_code})")
            return
        client.publish(self.topic("status"), "online", qos=QOS, retain=True)
        client.publish(self.topic("info"), json.dumps(self._birth()), qos=QOS, retain=True)
        self._say(
            f"mqtt: {'re' if self.ever_connected else ''}connected to "
            f"{self.config.host}:{self.config.port}, topics {self.config.prefix}/..."
        )
        self.ever_connected = True
        self.connected.set()

    def _birth(self) -> dict:
        return {"state": "online", "time": round(time.time(), 3), **self.context.identity.to_dict()}

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self._say(
                f"mqtt: lost the broker ({reason_code}); reconnecting, keeping up to "
                f"{self.config.queue} messages meanwhile"
            )

    def _on_connect_fail(self, client, userdata) -> None:
        if not self.ever_connected and not getattr(self, "_absent_said", False):
            self._absent_said = True
            self._say(
                f"mqtt: no broker at {self.config.host}:{self.config.port} yet; the loop runs on, "
                f"keeping up to {self.config.queue} messages until it answers"
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid in self.pending:
                self.pending.discard(mid)
            else:
                self.acked.add(mid)

    def _say(self, message: str) -> None:
        self.context.log(message)

    def publish(self, leaf: str, payload: dict, retain: bool = False) -> None:
        import paho.mqtt.client as mqtt

        info = self.client.publish(self.topic(leaf), json.dumps(payload), qos=QOS, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.context.summary.add_dropped(self.name)
            if not self.overflow_reported:
                self.overflow_reported = True
                self._say(
                    f"warning: mqtt queue full ({self.config.queue} messages waiting for the "
                    "broker); further records are dropped and counted"
                )
            return
        with self.lock:
            if info.mid in self.acked:
                self.acked.discard(info.mid)
            else:
                self.pending.add(info.mid)

    def handle(self, event) -> None:
        if isinstance(event, Decision):
            self.publish("decisions", event.to_dict())
        elif isinstance(event, Record) and self.config.publish == "frames":
            self.publish("records", event.to_dict())
        self._maybe_drift()

    def _maybe_drift(self) -> None:
        drift = self.context.summary.drift
        state, last = self.last_drift
        if not drift or (drift.get("state") == state and time.monotonic() - last < 10):
            return
        self.last_drift = (drift.get("state"), time.monotonic())
        self.publish("drift", drift, retain=True)

    def close(self) -> None:
        if self.client is None:
            return
        was_connected = self.connected.is_set()
        try:
            if was_connected:
                self.client.publish(self.topic("status"), "offline", qos=QOS, retain=True)
                deadline = time.monotonic() + 1.0  # let queued records reach the broker
                while self.pending and time.monotonic() < deadline:
                    time.sleep(0.02)
            self.client.disconnect()
        except Exception as exc:  # closing must not hide the summary
            self._say(f"warning: mqtt close: {describe(exc)}")
        # paho's thread is a daemon: when no broker answers it may sit in its back-off for a
        # second, and the stop (SIGTERM) must not wait for that
        stopper = threading.Thread(target=self.client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(timeout=1.0 if was_connected else 0.1)
        with self.lock:
            lost = len(self.pending)
        if lost:
            self.context.summary.add_dropped(self.name, lost)
            self._say(f"warning: mqtt: {lost} messages never reached the broker")


@SINKS.register("mqtt")
def make(config):
    return MqttSink(config) if config.mqtt else None
