"""A fleet: the boards of a group take a new bundle through the MQTT broker the line already has.

Topics, under the prefix of the --mqtt URL (PREFIX), the same on the workstation and the boards:

    PREFIX/rollouts/GROUP       retained: the group's rollout (`edgecls deploy`), so a board that
                                is offline now takes it when it connects
    PREFIX/boards/BOARD/model   retained: a board's model state, after every change
    PREFIX/boards/BOARD/...     the board's own topics with --group (records, status, deploy ...)

A rollout names the bundle by its name and the sha256 of its manifest.json (which lists the sha256
of every artifact), where to fetch it (`URL/index.json` lists the files, `URL/FILE` serves each:
`edgecls serve`, or any web server), the promotion policy (values left out are the board's own)
and the canary, which goes first; the others follow once the canary runs the bundle:

    {"rollout": "ID", "group": "line1", "bundle": {"name": "insects", "manifest_sha256": "..."},
     "url": "http://server:8000/bundles/insects", "canary": "board-a" | null,
     "policy": {"agreement": 0.95, "latency": 1.5, "frames": 200}, "time": 1700000000.0}

A board's state: {"board", "group", "rollout", "state" (running, waiting, fetching, shadow,
promoted, refused, rejected, replaced, rolled back), "active" and "candidate" ({"name",
"manifest_sha256"} or null), "agreement", "frames", "why", "time"}.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.redact import redact

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a group or board id: one topic level, any broker
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_MESSAGE_BYTES = 16384  # a rollout or a board's state is a few hundred bytes
CONNECT_SECONDS = 10.0
MAX_MANIFEST_BYTES = 8 << 20


def check_name(option: str, value: str) -> str:
    if not NAME.match(value or ""):
        raise EdgeclsError(
            f"{option} {value!r}: use 1-64 letters, digits, '_', '-' or '.' (one MQTT topic level)"
        )
    return value


def rollout_topic(prefix: str, group: str) -> str:
    return f"{prefix}/rollouts/{group}"


def board_prefix(prefix: str, board: str) -> str:
    return f"{prefix}/boards/{board}"


@dataclass(frozen=True)
class Policy:
    """When a board promotes the rollout's bundle; None: the board's own setting."""

    agreement: float | None = None
    latency: float | None = None
    frames: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Policy:
        """`agreement=0.95,latency=1.5,frames=200` (any of them)."""
        values = {}
        for item in (text or "").split(","):
            key, _, value = item.strip().partition("=")
            if not key:
                continue
            if key not in ("agreement", "latency", "frames"):
                raise EdgeclsError(f"--policy {text}: {key!r}: use agreement, latency or frames")
            try:
                values[key] = int(value) if key == "frames" else float(value)
            except ValueError:
                raise EdgeclsError(f"--policy {text}: {key}={value!r} is not a number") from None
        return cls(**values).checked()

    def checked(self) -> Policy:
        ok = (
            self.agreement is None or 0.0 <= self.agreement <= 1.0,
            self.latency is None or self.latency > 0,
            self.frames is None or self.frames >= 1,
        )
        if not all(ok):
            raise EdgeclsError(f"policy {self}: agreement in 0..1, latency > 0, frames >= 1")
        return self

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Rollout:
    rollout: str
    group: str
    name: str
    manifest_sha256: str
    url: str = field(repr=False)  # may carry a token: redact before showing
    canary: str | None = None
    policy: Policy = field(default_factory=Policy)
    time: float = 0.0

    def to_dict(self) -> dict:
        return {
            "rollout": self.rollout, "group": self.group,
            "bundle": {"name": self.name, "manifest_sha256": self.manifest_sha256},
            "url": self.url, "canary": self.canary, "policy": self.policy.to_dict(),
            "time": round(self.time, 3),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data) -> Rollout:
        """A rollout as a board reads it: one EdgeclsError line for anything else."""
        try:
            bundle, policy = data["bundle"], data.get("policy") or {}
            rollout = cls(
                check_name("rollout", str(data["rollout"])), check_name("group", data["group"]),
                str(bundle["name"]), str(bundle["manifest_sha256"]), str(data["url"]),
                check_name("canary", data["canary"]) if data.get("canary") else None,
                Policy(**policy).checked(), float(data.get("time", 0)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgeclsError(f"not a rollout ({type(exc).__name__}: {exc})") from None
        if not SHA256.match(rollout.manifest_sha256):
            raise EdgeclsError("not a rollout: manifest_sha256 is not a sha256")
        if not rollout.url.startswith(("http://", "https://")):
            raise EdgeclsError(f"rollout {rollout.rollout}: url {redact(rollout.url)} is not HTTP")
        return rollout

    @property
    def short(self) -> str:
        return f"{self.name}-{self.manifest_sha256[:12]}"


def new_rollout(bundle: Path, group: str, url: str, canary: str | None, policy: Policy) -> Rollout:
    """The rollout of a local bundle folder (the one that was signed and is served)."""
    from edgecls.bundle.folder import load_bundle, sha256

    bundle = Path(bundle)
    name = load_bundle(bundle).manifest.name
    check_name("--group", group)
    if canary is not None:
        check_name("--canary", canary)
    if not url.startswith(("http://", "https://")):
        raise EdgeclsError(f"--url {redact(url)}: give the bundle's http(s):// URL")
    rid = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    return Rollout(rid, group, name, sha256(bundle / "manifest.json"), url.rstrip("/"),
                   canary, policy, time.time())  # fmt: skip


def open_url(base: str, path: str = "", start: int = 0, timeout: float = 20.0):
    """GET base + path (from byte `start`); a token in the URL (`http://TOKEN@host/...`) goes as
    a bearer token, never in the request line. urllib's errors as they are."""
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    headers = {"Range": f"bytes={start}-"} if start else {}
    token = parts.password or parts.username
    if token:
        headers["Authorization"] = f"Bearer {token}"
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        base = urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(base.rstrip("/") + path, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def served_check(rollout: Rollout) -> str | None:
    """A warning where the URL does not serve this bundle's manifest.json (None: it does); a
    server the workstation cannot reach is said, not refused (the boards may reach it)."""
    import hashlib

    shown = redact(rollout.url)
    try:
        with open_url(rollout.url, "/manifest.json", timeout=10.0) as response:
            body = response.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        why = getattr(exc, "reason", exc)
        return f"{shown}: not reachable from here ({why}); the boards must reach it"
    if hashlib.sha256(body).hexdigest() != rollout.manifest_sha256:
        raise EdgeclsError(
            f"{shown}/manifest.json is not the manifest of {rollout.short}: serve the bundle "
            "you deploy (the boards would refuse it)"
        )
    return None


# --- the broker ---------------------------------------------------------------------------------


def _client(broker):
    """A connected paho client for `broker` (host, port, tls, username, password, ca)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"edgecls-deploy-{uuid.uuid4().hex[:8]}")  # fmt: skip
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=str(broker.ca) if broker.ca else None)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise EdgeclsError(f"--mqtt {broker.host}:{broker.port}: cannot connect ({exc})") from None
    client.loop_start()
    if not connected.wait(CONNECT_SECONDS):
        client.loop_stop()
        raise EdgeclsError(
            f"--mqtt {broker.host}:{broker.port}: the broker did not accept us in "
            f"{CONNECT_SECONDS:g} s (check the user and password in the URL)"
        )
    return client


def publish_rollout(broker, rollout: Rollout) -> str:
    """The rollout, retained, on its group's topic; the topic."""
    topic = rollout_topic(broker.prefix, rollout.group)
    client = _client(broker)
    try:
        info = client.publish(topic, json.dumps(rollout.to_dict()), qos=1, retain=True)
        info.wait_for_publish(CONNECT_SECONDS)
        if not info.is_published():
            raise EdgeclsError(f"--mqtt: the broker did not acknowledge {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic


def read_fleet(broker, group: str, seconds: float = 2.0) -> tuple[dict | None, list[dict]]:
    """The group's rollout and its boards' states, as the broker holds them (retained): what
    arrives within `seconds`, or until nothing new came for half a second."""
    prefix, seen, last = broker.prefix, {}, [time.monotonic()]
    lock = threading.Lock()

    def on_message(client, userdata, message):
        if len(message.payload) > MAX_MESSAGE_BYTES:
            return
        with lock:
            seen[message.topic] = message.payload.decode("utf-8", "replace")
            last[0] = time.monotonic()

    client = _client(broker)
    client.on_message = on_message
    topics = [rollout_topic(prefix, group), f"{prefix}/boards/+/model", f"{prefix}/boards/+/status"]
    client.subscribe([(t, 1) for t in topics])
    end = time.monotonic() + seconds
    while time.monotonic() < end and time.monotonic() - last[0] < 0.5:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    with lock:
        return _fleet_of(seen, prefix, group)


def _fleet_of(seen: dict[str, str], prefix: str, group: str) -> tuple[dict | None, list[dict]]:
    rollout, boards = _json(seen.get(rollout_topic(prefix, group))), []
    for topic, payload in sorted(seen.items()):
        state = _json(payload) if topic.endswith("/model") else None
        if not isinstance(state, dict) or state.get("group") != group:
            continue
        board = str(state.get("board"))
        state["online"] = seen.get(f"{board_prefix(prefix, board)}/status")
        boards.append(state)
    return rollout if isinstance(rollout, dict) else None, boards


def _json(text: str | None):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def status_rows(boards: list[dict], now: float | None = None) -> list[list[str]]:
    """The table `deploy --status` prints: board, active, candidate, agreement, state, rollout,
    last seen."""
    now = time.time() if now is None else now
    rows = []
    for b in boards:
        agreement = b.get("agreement")
        seen = max(0.0, now - float(b.get("time") or 0))
        rows.append([
            str(b.get("board")), _short(b.get("active")), _short(b.get("candidate")),
            "-" if agreement is None else f"{agreement:.3f}",
            str(b.get("state")),
            str(b.get("rollout") or "-"),
            f"{_ago(seen)} ({b.get('online') or '?'})",
        ])  # fmt: skip
    return rows


def _short(ref) -> str:
    if not isinstance(ref, dict):
        return "-"
    return f"{ref.get('name')}-{str(ref.get('manifest_sha256'))[:12]}"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
