"""`--opcua [HOST:]PORT`: an OPC UA server for the line's PLC or SCADA, after the OPC 40100
Machine Vision idea kept small: a state, a Trigger method, the last result and counters.

The server (asyncua) runs on a thread of its own with its own asyncio loop, so a client's
requests never touch the camera loop; verdicts reach it from the sink's thread. Node ids are
strings in the namespace `urn:edgecls` (index 2 here; a client should look it up by the URI),
`ns=2;s=InspectionStation.LastResult.Verdict` and so on, so a PLC needs no browsing:

| node id, after `InspectionStation.` | type | what |
|---|---|---|
| (`InspectionStation`) | Object | the station |
| `State` | String | `Ready`, `Busy` (a part waits for its verdict), `Stopped` |
| `Trigger` | Method | `Trigger(PlcId, Encoder: Int64) -> PartId: UInt32`; see below |
| `LastResult.PartId` | UInt32 | the station's part id (unique across restarts) |
| `LastResult.PlcId` | String | the PLC's id, echoed (`""`: none given) |
| `LastResult.Encoder` | Int64 | the encoder count, echoed (0: none given) |
| `LastResult.Label` | String | the verdict's label (`""`: fail-safe reject) |
| `LastResult.Verdict` | String | `pass` or `reject` |
| `LastResult.Reject` | Boolean | true: reject the part |
| `LastResult.Confidence` | Double | 0..1 |
| `LastResult.FailSafe` | Boolean | true: no verdict in time, this is the fail-safe one |
| `LastResult.Reason` | String | why the fail-safe verdict (`""` otherwise) |
| `LastResult.LatencyMs` | Double | trigger to verdict |
| `LastResult.TriggerTime` | DateTime | the trigger, UTC |
| `LastResult.ResultTime` | DateTime | the verdict, UTC |
| `LastResult.ResultSequence` | UInt32 | +1 per verdict, written last: subscribe to it |
| `Counters.PartsAnswered` | UInt64 | parts answered this run |
| `Counters.Rejected` | UInt64 | of those, rejected |
| `Counters.FailSafe` | UInt64 | of those, answered fail-safe |
| `Counters.Overflow` | UInt64 | triggers beyond `--part-queue` (fail-safe at once) |
| `Counters.Late` | UInt64 | verdicts the model reached after the fail-safe one |
| `Counters.Labels.<label>` | UInt64 | parts whose verdict was `<label>`, one per label |
| `Model.Bundle`, `.Artifact`, `.Sha256` | String | the model that answers |
| `Model.Labels` | String[] | its labels |

Trigger's PlcId is a String or an Int64 (declared BaseDataType; `""`: none). It answers
`BadInvalidState` without `--part-trigger opcua` and `BadInvalidArgument` for another type. All
values of one verdict are written in one Write, ResultSequence last, so a client that reads the
others when ResultSequence changes reads that verdict (unless the next one came in between).

Security: anonymous only on 127.0.0.1, localhost or ::1 without `--opcua-user`; with it, a user
name and password and no anonymous session. With `--opcua-cert`/`--opcua-key`, Basic256Sha256
Sign and SignAndEncrypt, and no unsecured endpoint beyond loopback. asyncua is imported only when
the server opens, so runs without `--opcua` (and `edgecls --help`) do not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from edgecls import logs
from edgecls.errors import EdgeclsError
from edgecls.runtime.loop_options import is_loopback
from edgecls.runtime.records import Identity, PartRecord
from edgecls.runtime.sinks import SINKS, Sink, SinkContext

MAX_MESSAGE_BYTES = 1 << 20

NAMESPACE = "urn:edgecls"
APPLICATION_URI = "urn:edgecls:station"  # unless the certificate names its own
ROOT = "InspectionStation"
# building asyncua's standard address space takes ~1.5 s on a PC, several on a Pi 3
START_SECONDS = 120.0
WRITE_SECONDS = 5.0
POLL_SECONDS = 0.1  # State and Counters follow triggers from other origins (gpio, mqtt...)
NULL_TIME = datetime(1601, 1, 1, tzinfo=timezone.utc)  # OPC UA's "no time"
UINT32, INT64 = 1 << 32, 1 << 63

# (path below ROOT, OPC UA type, initial value); LastResult in the order a verdict writes it
STATE = ("State", "String", "Ready")
RESULT = (
    ("LastResult.PartId", "UInt32", 0),
    ("LastResult.PlcId", "String", ""),
    ("LastResult.Encoder", "Int64", 0),
    ("LastResult.Label", "String", ""),
    ("LastResult.Verdict", "String", ""),
    ("LastResult.Reject", "Boolean", False),
    ("LastResult.Confidence", "Double", 0.0),
    ("LastResult.FailSafe", "Boolean", False),
    ("LastResult.Reason", "String", ""),
    ("LastResult.LatencyMs", "Double", 0.0),
    ("LastResult.TriggerTime", "DateTime", NULL_TIME),
    ("LastResult.ResultTime", "DateTime", NULL_TIME),
)
SEQUENCE = ("LastResult.ResultSequence", "UInt32", 0)
COUNTERS = {  # node -> PartCounts.to_dict() key
    "Counters.PartsAnswered": "answered",
    "Counters.Rejected": "rejected",
    "Counters.FailSafe": "fail_safe",
    "Counters.Overflow": "overflow",
    "Counters.Late": "late",
}
MODEL = ("Model.Bundle", "Model.Artifact", "Model.Sha256")


def node_table(labels: tuple[str, ...]) -> list[tuple[str, str, object]]:
    """Every variable of the address space, in the order the tree is built."""
    counters = [(c, "UInt64", 0) for c in COUNTERS]
    counters += [(f"Counters.Labels.{label}", "UInt64", 0) for label in labels]
    model = [(m, "String", "") for m in MODEL] + [("Model.Labels", "String", list(labels))]
    return [STATE, *RESULT, SEQUENCE, *counters, *model]


def result_values(record: PartRecord) -> dict[str, object]:
    """The LastResult variables of one verdict (ResultSequence apart: it is written last)."""
    return {
        "LastResult.PartId": record.part % UINT32,
        "LastResult.PlcId": "" if record.plc_id is None else str(record.plc_id),
        # a trigger from another origin (MQTT, HTTP) may carry any integer: Int64 or 0
        "LastResult.Encoder": _encoder(record.encoder),
        "LastResult.Label": record.label or "",
        "LastResult.Verdict": "reject" if record.reject else "pass",
        "LastResult.Reject": record.reject,
        "LastResult.Confidence": float(record.confidence),
        "LastResult.FailSafe": record.fail_safe,
        "LastResult.Reason": record.reason,
        "LastResult.LatencyMs": float(record.latency_ms),
        "LastResult.TriggerTime": _utc(record.triggered),
        "LastResult.ResultTime": _utc(record.time),
    }


def model_values(identity: Identity) -> dict[str, object]:
    return {
        "Model.Bundle": identity.bundle,
        "Model.Artifact": identity.artifact,
        "Model.Sha256": identity.sha256,
        "Model.Labels": list(identity.labels),
    }


def counter_values(counts: dict, labels: tuple[str, ...]) -> dict[str, int]:
    """The Counters variables from PartCounts.to_dict()."""
    values = {node: int(counts.get(key, 0)) for node, key in COUNTERS.items()}
    for label in labels:
        values[f"Counters.Labels.{label}"] = int(counts.get("labels", {}).get(label, 0))
    return values


def plc_arguments(args: list) -> tuple[int | str | None, int | None] | None:
    """Trigger's (PlcId, Encoder) from the call's values; None where one has the wrong type. An
    empty PlcId is none; a text id is cut at 64 characters, as the other triggers do."""
    values = [getattr(a, "Value", a) for a in args] + [None, None]
    plc_id, encoder = values[0], values[1]
    if isinstance(plc_id, str):
        plc_id = plc_id.strip()[:64] or None
    elif plc_id is not None and (isinstance(plc_id, bool) or not isinstance(plc_id, int)):
        return None
    if encoder is not None and (isinstance(encoder, bool) or not isinstance(encoder, int)):
        return None
    return plc_id, encoder


def _encoder(value: int | None) -> int:
    """An Int64 node holds no None: 0 stands for "none given", as the node table says."""
    return value if value is not None and -INT64 <= value < INT64 else 0


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc) if t > 0 else NULL_TIME


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Users:
    """asyncua's user manager: anonymous where allowed, else the one USER:PASSWORD, compared in
    constant time; never the admin role (that may change the address space)."""

    def __init__(self, user: str | None, anonymous: bool):
        name, _, password = (user or "").partition(":")
        self.name, self.password = name.encode(), password.encode()
        self.anonymous = anonymous and user is None

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole

        # `certificate` is the secure channel's, not a user's: X509 user tokens are not offered
        if username is None:  # an anonymous token (the only other one offered)
            return User(role=UserRole.User) if self.anonymous else None
        if not self.name or password is None:
            return None
        given = password if isinstance(password, bytes) else str(password).encode()
        same_name = hmac.compare_digest(str(username).encode(), self.name)
        same_password = hmac.compare_digest(given, self.password)
        return User(role=UserRole.User, name=str(username)) if same_name & same_password else None


def read_certificate(cert: Path, key: Path) -> tuple[bytes, bytes, str | None]:
    """The certificate and key as PEM or DER bytes, checked to belong together and to be RSA
    (Basic256Sha256), and the application URI the certificate names, if any."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        cert_bytes, key_bytes = Path(cert).read_bytes(), Path(key).read_bytes()
    except OSError as exc:
        raise EdgeclsError(f"--opcua-cert/--opcua-key: cannot read ({exc})") from None
    try:
        pem = cert_bytes.lstrip().startswith(b"-----BEGIN")
        load = x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate
        certificate = load(cert_bytes)
        pem = key_bytes.lstrip().startswith(b"-----BEGIN")
        load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
        private_key = load(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise EdgeclsError(
            f"--opcua-cert {cert} / --opcua-key {key}: not a certificate and an unencrypted "
            f"private key in PEM or DER ({exc})"
        ) from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise EdgeclsError(f"--opcua-key {key}: Basic256Sha256 needs an RSA key")
    if certificate.public_key().public_numbers() != private_key.public_key().public_numbers():
        raise EdgeclsError(f"--opcua-key {key} is not the key of --opcua-cert {cert}")
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return cert_bytes, key_bytes, (uris[0] if uris else None)


class OpcuaSink(Sink):
    name = "opcua"

    def __init__(self, config):
        self.config = config.opcua
        self.server: OpcuaServer | None = None
        self.sequence = 0
        self.identity: Identity | None = None

    def wants(self, event) -> bool:
        return isinstance(event, PartRecord)  # frames and decisions cost nothing

    def open(self, context: SinkContext) -> None:
        try:
            import asyncua  # noqa: F401  (here, not on the server's thread: a clear error)
        except ImportError:
            raise EdgeclsError("--opcua needs asyncua: pip install 'edgecls[device]'") from None
        self.identity = context.identity  # what the server shows from its start
        self.server = OpcuaServer(self.config, context)
        context.log(self.server.start())

    def handle(self, event: PartRecord) -> None:
        self.sequence = (self.sequence + 1) % UINT32
        values = result_values(event)
        if event.identity != self.identity:  # a model swap shows on the server too
            self.identity = event.identity
            values.update(model_values(event.identity))
        self.server.publish(values, self.sequence)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


class OpcuaServer:
    """asyncua's Server on its own thread and loop; publish() and stop() from any thread."""

    def __init__(self, config, context: SinkContext):
        self.config = config
        self.context = context
        self.labels = tuple(context.identity.labels)
        self.address = config.address
        self.loopback = is_loopback(self.address.host)
        self.certificate = read_certificate(config.cert, config.key) if config.cert else None
        self.url = f"opc.tcp://{_url_host(self.address.host)}:{self.address.port}/edgecls/"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.lock: asyncio.Lock | None = None  # one Write of State/Counters/a verdict at a time
        self.started = threading.Event()
        self.halt = threading.Event()  # stop() was called: a server that starts now stops
        self.server = None  # asyncua's, once built
        self.error: BaseException | None = None
        self.nodes: dict = {}  # path -> NodeId
        self.types: dict = {}  # path -> VariantType
        self.shown: dict = {}  # path -> the value the server holds
        self.told_no_trigger = False
        self.thread = threading.Thread(target=self._run, name="opcua", daemon=True)

    def start(self) -> str:
        """Listen, or raise EdgeclsError; returns the line to log. A stop signal while the
        server builds (seconds on a Pi) ends the wait: the run is ending anyway."""
        verbose = logs.verbose()
        # CRITICAL as pymodbus: a client's garbage or a refused login is no line for the journal
        logging.getLogger("asyncua").setLevel(logging.INFO if verbose else logging.CRITICAL)
        if not verbose:  # its accept errors (a descriptor limit reached) are a traceback each
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        # its one error there is a failed start, with a traceback: this class reports it
        logging.getLogger("asyncua.server.server").setLevel(
            logging.INFO if verbose else logging.CRITICAL
        )
        self.thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self.started.wait(0.1):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise self._start_error(self.error)
            if self.context.stop.is_set():
                self.stop()
                return "opcua: not started (the run is stopping)"
        return f"opcua: {self.url} (namespace {NAMESPACE}, {self._access()})"

    def _access(self) -> str:
        if self.config.user is None:
            access = "anonymous: 127.0.0.1 only"
        else:
            access = f"user {self.config.user.partition(':')[0]}"
        if self.certificate:
            access += "; Basic256Sha256 Sign, SignAndEncrypt"
            if self.certificate[2] is None:
                access += " (the certificate names no application URI: some clients refuse it)"
        elif self.config.user is not None and not self.loopback:
            access += "; the password travels in clear: give --opcua-cert and --opcua-key"
        station = self.context.station
        if station is None or not station.config.accepts("opcua"):
            access += "; Trigger needs --part-trigger opcua"
        return access

    def _start_error(self, exc: BaseException | None) -> EdgeclsError:
        where = f"--opcua {_url_host(self.address.host)}:{self.address.port}"
        if exc is None:
            return EdgeclsError(f"{where}: the server did not start within {START_SECONDS:g} s")
        if isinstance(exc, socket.gaierror):
            return EdgeclsError(
                f"{where}: no such host ({exc.strerror}); give an address of this board or 0.0.0.0"
            )
        if isinstance(exc, OSError):
            what = {
                errno.EADDRINUSE: "another program listens there: choose another port",
                errno.EACCES: "a port below 1024 needs privileges: choose one above it",
                errno.EADDRNOTAVAIL: "no interface has this address: give one of this board's",
            }.get(exc.errno, "check the host and port")
            # asyncio wraps the reason in its own words: the system's are shorter
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            return EdgeclsError(f"{where}: cannot listen ({reason}); {what}")
        return EdgeclsError(f"{where}: the server did not start ({type(exc).__name__}: {exc})")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(), or a crash after it (logged)
            if self.started.is_set():
                self.context.log(f"warning: opcua: the server stopped ({exc!r})")
            else:
                self.error = exc

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.lock = asyncio.Lock()
        self.server = server = await self._build()
        await server.start()  # on failure asyncua stops its internal server itself
        self.started.set()
        if self.halt.is_set():
            self.stopping.set()
        poll = asyncio.create_task(self._poll())
        try:
            await self.stopping.wait()
        finally:
            poll.cancel()
            await server.stop()

    async def _build(self):
        """The server with its endpoints, users and address space, not yet listening."""
        from asyncua import Server, ua
        from asyncua.common.connection import TransportLimits

        server = Server(user_manager=Users(self.config.user, self.loopback))
        # a PLC's messages are small: 1 MB, not asyncua's 100 MB, is what a client may make the
        # board hold before it logs in
        server.limits = TransportLimits(65535, 65535, 16, MAX_MESSAGE_BYTES)
        await server.init()
        server.set_server_name("edgecls inspection station")
        server.set_endpoint(self.url)
        server.allow_remote_admin(False)
        policies = (
            [] if self.certificate and not self.loopback else [ua.SecurityPolicyType.NoSecurity]
        )
        if self.certificate:
            cert, key, uri = self.certificate
            await server.set_application_uri(uri or APPLICATION_URI)
            await server.load_certificate(cert, format="pem" if b"-----BEGIN" in cert else "der")
            await server.load_private_key(key, format="pem" if b"-----BEGIN" in key else "der")
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        else:
            await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy(policies)
        anonymous = self.loopback and self.config.user is None
        server.set_identity_tokens(
            [ua.AnonymousIdentityToken] if anonymous else [ua.UserNameIdentityToken]
        )
        await self._address_space(server)
        return server

    async def _address_space(self, server) -> None:
        """The tree of the module's table, its initial values, and the Trigger method."""
        from asyncua import ua

        ns = await server.register_namespace(NAMESPACE)
        root = await server.nodes.objects.add_object(
            ua.NodeId(ROOT, ns), ua.QualifiedName(ROOT, ns)
        )
        objects = {"": root}
        initial = {**model_values(self.context.identity), STATE[0]: self._state()}
        for path, kind, value in node_table(self.labels):
            head, _, name = path.rpartition(".")
            for i, folder in enumerate(head.split(".") if head else ()):
                at = ".".join(head.split(".")[: i + 1])
                if at not in objects:
                    above = objects[at.rpartition(".")[0]]
                    node_id, browse = ua.NodeId(f"{ROOT}.{at}", ns), ua.QualifiedName(folder, ns)
                    objects[at] = await above.add_object(node_id, browse)
            vtype, value = ua.VariantType[kind], initial.get(path, value)
            node = await objects[head].add_variable(
                ua.NodeId(f"{ROOT}.{path}", ns),
                ua.QualifiedName(name, ns),
                ua.Variant(value, vtype),
            )
            if isinstance(value, list):  # a one-dimensional array of any length
                await node.write_attribute(
                    ua.AttributeIds.ValueRank, ua.DataValue(ua.Variant(1, ua.VariantType.Int32))
                )
            self.nodes[path], self.types[path], self.shown[path] = node.nodeid, vtype, value
        await self._add_trigger(root, ns)

    async def _add_trigger(self, root, ns: int) -> None:
        from asyncua import ua

        def argument(name: str, data_type: int, text: str):
            return ua.Argument(
                Name=name, DataType=ua.NodeId(data_type), ValueRank=-1,
                Description=ua.LocalizedText(text),
            )  # fmt: skip

        inputs = [
            argument("PlcId", ua.ObjectIds.BaseDataType, "the PLC's id for the part: String or "
                     "Int64 (\"\": none)"),
            argument("Encoder", ua.ObjectIds.Int64, "the encoder count at the trigger (0: none)"),
        ]  # fmt: skip
        outputs = [argument("PartId", ua.ObjectIds.UInt32, "the station's id for the part")]
        method = await root.add_method(
            ua.NodeId(f"{ROOT}.Trigger", ns), ua.QualifiedName("Trigger", ns), self._trigger,
            inputs, outputs,
        )  # fmt: skip
        await method.write_attribute(
            ua.AttributeIds.Description,
            ua.DataValue(ua.Variant(ua.LocalizedText(
                "A part is in front of the camera: returns its id; the verdict follows in "
                "LastResult (needs --part-trigger opcua)"
            ), ua.VariantType.LocalizedText)),
        )  # fmt: skip

    async def _trigger(self, parent, *args):
        """Trigger(PlcId, Encoder) -> PartId, on the server's loop; the station's trigger (a lock,
        a file write per thousand ids) runs on a worker thread so no session waits on it."""
        from asyncua import ua

        station = self.context.station
        if station is None or not station.config.accepts("opcua"):
            if not self.told_no_trigger:
                self.told_no_trigger = True
                self.context.log(
                    "warning: opcua: a client called Trigger, but this run takes no OPC UA "
                    "triggers (answered BadInvalidState): give --part-trigger opcua"
                )
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        fields = plc_arguments(list(args))
        if fields is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        try:
            part = await asyncio.to_thread(station.trigger, "opcua", *fields)
        except Exception as exc:  # e.g. --part-state cannot be written: said here, not traced
            self.context.log(f"warning: opcua: Trigger failed ({exc})")
            return ua.StatusCode(ua.StatusCodes.BadInternalError)
        if part is None:  # the run is stopping: no part it could still answer
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        await self._refresh()
        return [ua.Variant(part.id % UINT32, ua.VariantType.UInt32)]

    def _state(self) -> str:
        station = self.context.station
        if station is None or station.closed:
            return "Stopped"
        return "Busy" if station.busy else "Ready"

    def _changes(self) -> dict[str, object]:
        """State and Counters now (read on the loop, so a later write never shows older counts)."""
        values: dict[str, object] = {STATE[0]: self._state()}
        counts = self.context.summary.parts
        if counts is not None:
            values.update(counter_values(counts.to_dict(), self.labels))
        return values

    async def _write(self, values: dict[str, object]) -> None:
        """One Write of all `values`, in their order (asyncua applies a Write's items in order)."""
        from asyncua import ua

        items = [
            ua.WriteValue(
                NodeId=self.nodes[path],
                AttributeId=ua.AttributeIds.Value,
                Value=ua.DataValue(ua.Variant(value, self.types[path])),
            )
            for path, value in values.items()
            if path in self.nodes
        ]
        results = await self.server.iserver.isession.write(ua.WriteParameters(NodesToWrite=items))
        for item, status in zip(items, results, strict=True):
            if not status.is_good():
                raise RuntimeError(f"writing {item.NodeId.Identifier}: {status.name}")
        self.shown.update(values)

    async def _refresh(self) -> None:
        """Write State and Counters where they changed."""
        async with self.lock:
            values = {k: v for k, v in self._changes().items() if self.shown.get(k) != v}
            if values:
                await self._write(values)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self._refresh()
            except Exception as exc:  # reported, and tried again at the next poll
                self.context.log(f"warning: opcua: cannot update State/Counters ({exc})")
                await asyncio.sleep(10)

    async def _publish(self, values: dict[str, object], sequence: int) -> None:
        async with self.lock:
            values = {**values, **self._changes(), SEQUENCE[0]: sequence}
            await self._write(values)

    def publish(self, values: dict[str, object], sequence: int) -> None:
        """One verdict (from the sink's thread): LastResult, Model where it changed, State and
        Counters, ResultSequence last; waits until the server holds them."""
        if self.halt.is_set() and not self.started.is_set():  # the run stopped as it opened
            return
        if self.loop is None or not self.thread.is_alive():
            raise RuntimeError("the OPC UA server is not running")
        future = asyncio.run_coroutine_threadsafe(self._publish(values, sequence), self.loop)
        future.result(timeout=WRITE_SECONDS)

    def stop(self) -> None:
        """Stop listening and close the sessions; the port is free when this returns."""
        self.halt.set()
        loop, stopping = self.loop, self.stopping
        if loop is not None and stopping is not None and self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stopping.set)
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=5.0)


@SINKS.register("opcua")
def make(config):
    return OpcuaSink(config) if config.opcua else None
