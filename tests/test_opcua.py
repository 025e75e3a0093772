"""--opcua: a real asyncua client against the real server of the sink, with a real station fed
synthetic records as the camera loop would (no model, no camera)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import threading
import time
from pathlib import Path

import pytest
from asyncua import Client, ua
from mjpeg_server import free_port

import edgecls.runtime.sinks.opcua  # noqa: F401  (registers the sink)
from edgecls.errors import EdgeclsError
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.parts import Station
from edgecls.runtime.records import Identity, PartCounts, Record, Summary
from edgecls.runtime.sinks import SinkContext, build_sinks

LABELS = ("ok", "def")
ID = Identity("casting", "model_int8.tflite", "ab" * 32, LABELS)
ROOT = "InspectionStation"
USER = "line:s3cret pass"


def record(i: int, label: str, conf: float) -> Record:
    p = (conf, 1 - conf) if label == "ok" else (1 - conf, conf)
    return Record(i, time.time(), label, label, conf, p, 1.5, "cam", ID)


def serve(tmp_path: Path, host: str = "127.0.0.1", **options):
    """The opcua sink opened as the loop opens it, with a started station behind it."""
    port = free_port()
    options.setdefault("part_trigger", ["opcua"])
    cfg = LoopOptions(
        bundle=Path("b"), headless=True, opcua=f"{host}:{port}", trigger="def",
        part_state=str(tmp_path / "ids"), **options,
    ).to_config()  # fmt: skip
    logs: list[str] = []
    ctx = SinkContext(Summary(), threading.Event(), logs.append, ID, live=False)
    station = Station(cfg.parts, ID, PartCounts())
    ctx.station, ctx.summary.parts = station, station.counts
    sinks = build_sinks(cfg, ctx).open()
    station.start(sinks.publish, "cam")
    return station, sinks, logs, f"opc.tcp://{host}:{port}/edgecls/", port


def stop(station, sinks) -> float:
    """Close as the loop does (parts first, then the outputs); returns the seconds it took."""
    t = time.monotonic()
    station.close()
    sinks.close()
    return time.monotonic() - t


async def values(client: Client, paths: list[str]) -> dict:
    ns = await client.get_namespace_index("urn:edgecls")
    nodes = [client.get_node(ua.NodeId(f"{ROOT}.{p}", ns)) for p in paths]
    return dict(zip(paths, await client.read_values(nodes), strict=True))


async def until_sequence(client: Client, n: int, seconds: float = 3.0) -> dict:
    """LastResult once ResultSequence reaches n (polled: no fixed sleep)."""
    paths = [f"LastResult.{k}" for k in RESULT_KEYS]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = await values(client, ["LastResult.ResultSequence"])
        if got["LastResult.ResultSequence"] >= n:
            return {k.split(".")[1]: v for k, v in (await values(client, paths)).items()}
        await asyncio.sleep(0.02)
    raise AssertionError(f"ResultSequence did not reach {n} within {seconds} s")


RESULT_KEYS = (
    "PartId", "PlcId", "Encoder", "Label", "Verdict", "Reject", "Confidence", "FailSafe",
    "Reason", "LatencyMs", "TriggerTime", "ResultTime", "ResultSequence",
)  # fmt: skip


async def trigger(client: Client, *args) -> tuple[int, float]:
    ns = await client.get_namespace_index("urn:edgecls")
    station = client.get_node(ua.NodeId(ROOT, ns))
    t = time.perf_counter()
    part = await station.call_method(ua.NodeId(f"{ROOT}.Trigger", ns), *args)
    return part, time.perf_counter() - t


class Sequences:
    """A subscription's ResultSequence notifications."""

    def __init__(self):
        self.seen: list[int] = []

    def datachange_notification(self, node, val, data):
        self.seen.append(val)


async def _inspect(url: str, station: Station) -> dict:
    async with Client(url) as client:
        ns = await client.get_namespace_index("urn:edgecls")
        sequences = Sequences()
        subscription = await client.create_subscription(20, sequences)
        await subscription.subscribe_data_change(
            client.get_node(ua.NodeId(f"{ROOT}.LastResult.ResultSequence", ns))
        )
        # a rejected part: the PLC's id and encoder echoed, the verdict of its frame
        before = time.time()
        part_id, seconds = await trigger(client, "PLC-4711", 123456)
        part = station.current()
        assert (part.id, part.plc_id, part.encoder) == (part_id, "PLC-4711", 123456)
        assert (await values(client, ["State"]))["State"] == "Busy"
        station.add_frame(part, record(1, "def", 0.93), time.monotonic())
        first = await until_sequence(client, 1)
        # a part with no frame: the fail-safe reject once its window ends
        failed_id, _ = await trigger(client, 42, 7)
        fail_safe = await until_sequence(client, 2)
        # a good part, triggered with no PLC id
        good_id, _ = await trigger(client, "", 0)
        station.add_frame(station.current(), record(3, "ok", 0.81), time.monotonic())
        good = await until_sequence(client, 3)
        # a part from another trigger (a light barrier): no PLC id, no encoder
        pin = station.trigger("gpio:27")
        station.add_frame(station.current(), record(4, "ok", 0.8), time.monotonic())
        barrier = await until_sequence(client, 4)
        assert (barrier["PartId"], barrier["PlcId"], barrier["Encoder"]) == (pin.id, "", 0)
        with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
            await trigger(client, 1.5, 0)
        deadline = time.monotonic() + 2
        while sequences.seen[-1:] != [4] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        paths = ["State", "Counters.PartsAnswered", "Counters.Rejected", "Counters.FailSafe"]
        paths += ["Counters.Overflow", "Counters.Late", "Counters.Labels.ok", "Counters.Labels.def"]
        paths += ["Model.Bundle", "Model.Sha256", "Model.Labels"]
        rest = await values(client, paths)
    return {
        "ids": (part_id, failed_id, good_id), "seconds": seconds, "before": before,
        "first": first, "fail_safe": fail_safe, "good": good, "rest": rest,
        "seen": sequences.seen,
    }  # fmt: skip


def test_a_plc_triggers_over_opcua_and_reads_verdicts_counters_and_the_model(tmp_path):
    station, sinks, logs, url, port = serve(tmp_path, inspect_window_ms=300)
    try:
        got = asyncio.run(_inspect(url, station))
    finally:
        took = stop(station, sinks)
    assert logs[0] == f"opcua: {url} (namespace urn:edgecls, anonymous: 127.0.0.1 only)"
    assert got["seconds"] < 0.5  # tens of ms on loopback; slack for a loaded CI machine
    first, fail_safe, good = got["first"], got["fail_safe"], got["good"]
    assert first["PartId"] == got["ids"][0] and first["PlcId"] == "PLC-4711"
    assert first["Encoder"] == 123456 and first["Label"] == "def"
    assert (first["Verdict"], first["Reject"], first["FailSafe"]) == ("reject", True, False)
    assert first["Confidence"] == pytest.approx(0.93) and first["Reason"] == ""
    assert 0 < first["LatencyMs"] < 300
    trigger_time = first["TriggerTime"].replace(tzinfo=datetime.timezone.utc).timestamp()
    assert got["before"] - 0.01 <= trigger_time <= time.time()
    assert first["ResultTime"] >= first["TriggerTime"]
    assert fail_safe["PartId"] == got["ids"][1] and fail_safe["PlcId"] == "42"
    assert (fail_safe["FailSafe"], fail_safe["Reject"], fail_safe["Label"]) == (True, True, "")
    assert fail_safe["Verdict"] == "reject" and "no verdict within 300 ms" in fail_safe["Reason"]
    assert good["PartId"] == got["ids"][2] and good["PlcId"] == ""
    assert (good["Label"], good["Verdict"], good["Reject"]) == ("ok", "pass", False)
    assert good["ResultSequence"] == 3 and got["seen"][-1] == 4
    rest, counts = got["rest"], station.counts.to_dict()
    assert rest["State"] == "Ready"
    assert rest["Counters.PartsAnswered"] == counts["answered"] == 4
    assert rest["Counters.Rejected"] == counts["rejected"] == 2
    assert rest["Counters.FailSafe"] == counts["fail_safe"] == 1
    assert rest["Counters.Overflow"] == rest["Counters.Late"] == 0
    assert (rest["Counters.Labels.ok"], rest["Counters.Labels.def"]) == (2, 1)
    assert rest["Model.Bundle"] == "casting" and rest["Model.Sha256"] == ID.sha256
    assert rest["Model.Labels"] == list(LABELS)
    # the port is free at once: the next run's server (SO_REUSEADDR, as asyncio's) listens there
    assert took < 3.0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


async def _logins(url: str) -> dict:
    out = {}
    for who, login in {"anonymous": None, "wrong": "line:guess", "right": USER}.items():
        client = Client(url)
        if login:
            name, _, password = login.partition(":")
            client.set_user(name)
            client.set_password(password)
        try:
            async with client:
                out[who] = (await values(client, ["State"]))["State"]
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):
                    await trigger(client, "PLC-1", 0)
        except ua.UaStatusCodeError as exc:
            out[who] = type(exc).__name__
    return out


def test_a_user_and_password_are_required_when_given_and_a_wrong_one_is_refused(tmp_path):
    # no --part-trigger opcua here: Trigger answers BadInvalidState, and says why in the log
    station, sinks, logs, url, _ = serve(tmp_path, part_trigger=["interval:1000"], opcua_user=USER)
    try:
        got = asyncio.run(_logins(url))
    finally:
        stop(station, sinks)
    assert got["anonymous"] == "BadIdentityTokenRejected"
    assert got["wrong"] == "BadUserAccessDenied"
    assert got["right"] == "Ready"
    assert "user line" in logs[0] and "Trigger needs --part-trigger opcua" in logs[0]
    assert "s3cret" not in " ".join(logs)
    assert any("give --part-trigger opcua" in line for line in logs[1:])
    assert station.counts.answered == 0


def _certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate for an OPC UA application (URI, 127.0.0.2), as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.UniformResourceIdentifier(uri), x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]
    usage = x509.KeyUsage(True, True, True, True, False, False, False, False, False)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(usage, critical=False)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _secure(url: str, client_cert: Path, client_key: Path) -> dict:
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    probe = Client(url)
    endpoints = await probe.connect_and_get_server_endpoints()
    offered = {(e.SecurityPolicyUri.rpartition("#")[2], e.SecurityMode.name) for e in endpoints}
    out: dict = {"offered": offered}
    with contextlib.suppress(Exception):  # an unsecured client finds no endpoint to use
        async with Client(url) as plain:
            out["plain"] = await plain.get_namespace_index("urn:edgecls")
    client = Client(url)
    client.application_uri = "urn:edgecls:test-client"
    name, _, password = USER.partition(":")
    client.set_user(name)
    client.set_password(password)
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(client_cert), str(client_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )  # fmt: skip
    async with client:
        out["secure"] = (await values(client, ["State"]))["State"]
    return out


def test_a_certificate_offers_basic256sha256_and_no_unsecured_endpoint_beyond_loopback(tmp_path):
    cert, key = _certificate(tmp_path, "board", "urn:edgecls:test-board")
    client_cert, client_key = _certificate(tmp_path, "client", "urn:edgecls:test-client")
    # every address of this machine: the network, reached here through 0.0.0.0 itself
    station, sinks, logs, url, _ = serve(
        tmp_path, host="0.0.0.0", opcua_user=USER, opcua_cert=cert, opcua_key=key
    )
    try:
        got = asyncio.run(_secure(url, client_cert, client_key))
    finally:
        stop(station, sinks)
    assert got["offered"] == {("Basic256Sha256", "Sign"), ("Basic256Sha256", "SignAndEncrypt")}
    assert "plain" not in got
    assert got["secure"] == "Ready"
    assert "Basic256Sha256 Sign, SignAndEncrypt" in logs[0] and "in clear" not in logs[0]


def test_a_busy_port_is_one_clear_error_and_leaves_nothing_running(tmp_path, caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = LoopOptions(
            bundle=Path("b"), headless=True, part_trigger=["opcua"], opcua=str(port),
            part_state=str(tmp_path / "ids"),
        ).to_config()  # fmt: skip
        ctx = SinkContext(Summary(), threading.Event(), [].append, ID, live=False)
        ctx.station = Station(cfg.parts, ID, PartCounts())
        before = {t.name for t in threading.enumerate()}
        with pytest.raises(EdgeclsError) as error:
            build_sinks(cfg, ctx).open()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"--opcua 127.0.0.1:{port}: cannot listen (Address already in use)")
    assert "choose another port" in message
    assert "opcua" not in {t.name for t in threading.enumerate()} - before
    assert not [r for r in caplog.records if r.name.startswith("asyncua")]  # no traceback
