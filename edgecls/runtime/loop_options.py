"""Every option of `edgecls run`, in one typed table that the command line, the device file
(`--config device.yaml`) and Python users share, and the typed LoopConfig the loop reads.

`LoopOptions` is flat, one field per command-line option (the field's metadata is its help), so a
device file is just those names as keys. `LoopOptions.to_config()` checks and parses them (URLs,
ROI, trigger rules) into `LoopConfig`, with one error line naming the option.
"""

from __future__ import annotations

import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edgecls.bundle.backends import RuntimeOptions
from edgecls.bundle.formats import backend_formats
from edgecls.errors import EdgeclsError
from edgecls.redact import redact
from edgecls.runtime.collection.rules import CollectConfig
from edgecls.runtime.decisions import DecisionConfig
from edgecls.runtime.models.config import SwapConfig, swap_config
from edgecls.runtime.parts import PartsConfig, TriggerSpec
from edgecls.runtime.parts.triggers import PART_TRIGGERS
from edgecls.runtime.sources import CaptureSettings
from edgecls.schema import option as opt


@dataclass(frozen=True)
class LoopOptions:
    """The options of `edgecls run`; a device file holds any of them under the same names."""

    bundle: Path | None = opt(None, "bundle folder (export/NAME)", argument=True)  # noqa: RUF009
    source: str = opt(
        "0", "camera index, video file, image folder/glob, rtsp/http URL or GStreamer pipeline"
    )
    backend: str = opt("auto", f"auto, {' or '.join(backend_formats())}")
    artifact: str | None = opt(None, "run this artifact file of the bundle")
    delegate: str = opt("auto", "auto, none, xnnpack, gpu, nnapi, edgetpu or PATH.so")
    threads: int | None = opt(None, "inference threads; default: auto tries all cores, one fewer")
    providers: str | None = opt(None, "ONNX Runtime providers, comma-separated")
    trt_cache: Path | None = opt(None, "TensorRT engine cache folder")  # noqa: RUF009
    fp16: bool = opt(False, "TensorRT fp16 kernels")
    strict: bool = opt(False, "a delegate/provider that cannot load is an error")
    allow_failed: bool = opt(False, "run artifacts that failed their parity gate")
    trust: Path | None = opt(  # noqa: RUF009
        None, "public key (PEM): run only a bundle signed by it, exactly as signed"
    )
    width: int | None = opt(None, "camera capture width")
    height: int | None = opt(None, "camera capture height")
    fps: int | None = opt(None, "camera capture FPS")
    headless: bool = opt(False, "no window (boards without a display)")
    json: bool = opt(False, "one JSON record per classified frame on stdout (or --log-file)")
    min_confidence: float = opt(0.0, "below this, a frame is 'uncertain'")
    every: int = opt(1, "classify every Nth frame")
    max_frames: int | None = opt(None, "stop after N classified frames")
    roi: str | None = opt(None, "x,y,w,h: classify only this region of the frame")
    save_dir: Path | None = opt(None, "save classified frames here")  # noqa: RUF009
    save_labels: str | None = opt(None, "only frames of these labels, comma-separated")
    save_max_mb: float | None = opt(None, "keep saved frames within this many MB, oldest go first")
    collect: Path | None = opt(  # noqa: RUF009
        None, "keep frames worth labelling here (unsure, drifted, audit); label them on /label"
    )
    collect_margin: float = opt(0.15, "--collect: top-1 minus top-2 below this is unsure")
    collect_confidence: float = opt(0.6, "--collect: top-1 confidence below this is unsure")
    collect_audit: float = opt(1.0, "--collect: random frames a minute, spread over the classes")
    collect_rate: float = opt(1.0, "--collect: frames kept a second at most")
    collect_max_mb: float = opt(1024.0, "--collect: unlabelled frames kept within this, oldest go")
    record: Path | None = opt(  # noqa: RUF009
        None,
        "annotated video: .avi (plays to its last frame after a power cut) or .mp4 (60 s parts)",
    )
    log_file: Path | None = opt(None, "JSON records to this rotating file instead of stdout")  # noqa: RUF009
    log_max_mb: float = opt(10.0, "rotate --log-file at this size")
    log_backups: int = opt(5, "rotated --log-file copies kept")
    trigger: str | None = opt(None, "labels that make a decision, comma-separated")
    consecutive: int = opt(1, "decide after N trigger frames in a row")
    window: int | None = opt(None, "decide on K (--min-hits) trigger frames of the last N")
    min_hits: int | None = opt(None, "trigger frames needed within --window")
    gpio: str | None = opt(None, "pulse this GPIO pin on each decision (gpiozero pin name)")
    pulse_ms: float = opt(200.0, "length of the --gpio pulse")
    on_trigger: str | None = opt(None, "run this command on each decision (no shell)")
    on_trigger_timeout: float = opt(10.0, "kill an --on-trigger command after this many seconds")
    mqtt: str | None = opt(None, "mqtt[s]://[user:pass@]host[:port]/topic/prefix")
    mqtt_publish: str = opt("frames", "frames (a record per frame) or decisions")
    mqtt_ca: Path | None = opt(None, "CA certificate for mqtts://")  # noqa: RUF009
    mqtt_cert: Path | None = opt(None, "client certificate for mqtts://")  # noqa: RUF009
    mqtt_key: Path | None = opt(None, "client key for mqtts://")  # noqa: RUF009
    mqtt_queue: int = opt(1000, "messages kept while the broker is away; overflow is counted")
    http: str | None = opt(None, "[HOST:]PORT: live view, /latest, /metrics, /health")
    http_token: str | None = opt(None, "require 'Authorization: Bearer TOKEN' on --http")
    http_user: str | None = opt(None, "require basic auth USER:PASSWORD on --http")
    http_insecure: bool = opt(
        False, "serve --http beyond this board without --http-token/--http-user, on purpose"
    )
    stall_seconds: float = opt(10.0, "/health answers 503 after this long without a frame")
    drift: bool = opt(True, "watch for drift when the bundle has reference statistics")
    drift_window: int = opt(200, "frames in the drift monitor's rolling window")
    drift_threshold: float = opt(1.0, "drift score that raises the warning")
    queue_size: int = opt(64, "events each output may hold before it drops (counted)")
    part_trigger: list[str] | None = opt(  # noqa: RUF009
        None,
        "inspect a part per trigger (repeatable): gpio:PIN[:rising|falling], mqtt, http, "
        "modbus, opcua or interval:SECONDS",
        metavar="KIND[:ARG]",
    )
    capture_delay_ms: float = opt(0.0, "after a part trigger, capture from this many ms on")
    capture_frames: int = opt(1, "fresh frames captured per part")
    part_rule: str = opt(
        "any", "a part's verdict: any (a --trigger label on any frame), majority or mean"
    )
    inspect_window_ms: float = opt(
        200.0, "a part without a verdict this many ms after its trigger gets --fail-safe"
    )
    fail_safe: str = opt("reject", "the verdict of a part not answered in time: reject, or a label")
    part_queue: int = opt(8, "parts that may wait for the camera; more are answered fail-safe")
    trigger_debounce_ms: float = opt(5.0, "debounce of a gpio part trigger")
    part_state: Path | None = opt(None, "file of the next part id (default: the state folder)")  # noqa: RUF009
    max_parts: int | None = opt(None, "stop after N parts")
    modbus: str | None = opt(None, "[HOST:]PORT: Modbus TCP server for the PLC (host 127.0.0.1)")
    opcua: str | None = opt(None, "[HOST:]PORT: OPC UA server (host 127.0.0.1 unless given)")
    opcua_user: str | None = opt(None, "USER:PASSWORD for --opcua (needed beyond 127.0.0.1)")
    opcua_cert: Path | None = opt(None, "--opcua certificate (PEM) for encrypted sessions")  # noqa: RUF009
    opcua_key: Path | None = opt(None, "private key (PEM) of --opcua-cert")  # noqa: RUF009
    model_state: Path | None = opt(  # noqa: RUF009
        None,
        "the board's model state file (active, previous, candidate; default: the state "
        "folder with --inbox): a restart runs its active bundle if whole, else the previous",
    )
    inbox: Path | None = opt(  # noqa: RUF009
        None,
        "take candidate bundles dropped here (DIR/NAME/ with manifest.json, unchanged 1 s): "
        "checked, run in shadow, promoted or refused",
    )
    shadow_frames: int = opt(200, "frames a candidate runs in shadow before it is decided")
    shadow_share: float = opt(0.05, "the most of the time the candidate may compute in shadow")
    promote_agreement: float = opt(0.95, "promote at this top-1 agreement with the active model")
    promote_latency: float = opt(1.5, "... and a p90 latency at most this times the active's")
    group: str | None = opt(
        None,
        "with --mqtt: take this group's rollouts (`edgecls deploy`); this board's topics move "
        "to PREFIX/boards/BOARD-ID/",
    )
    board_id: str | None = opt(None, "this board's name in its --group (default: the hostname)")

    def to_config(self) -> LoopConfig:
        return _to_config(self)


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    prefix: str
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a printed config
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    publish: str = "frames"  # or "decisions"
    queue: int = 1000
    client_id: str | None = None
    group: str | None = None  # a fleet's group: rollouts of PREFIX/rollouts/GROUP are taken
    board: str | None = None  # with a group: this board's id (PREFIX/boards/BOARD/...)


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    user: str | None = field(default=None, repr=False)  # "user:password"
    stall_seconds: float = 10.0
    insecure: bool = False  # beyond loopback without auth, on purpose (--http-insecure)


@dataclass(frozen=True)
class ServerAddress:
    """Where a server for the line listens (Modbus TCP, OPC UA)."""

    host: str
    port: int


@dataclass(frozen=True)
class OpcuaConfig:
    address: ServerAddress
    user: str | None = field(default=None, repr=False)  # "user:password"
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class GpioConfig:
    pin: str
    pulse_ms: float = 200.0


@dataclass(frozen=True)
class CommandConfig:
    command: tuple[str, ...]
    timeout: float = 10.0


@dataclass(frozen=True)
class DriftConfig:
    enabled: bool = True
    window: int = 200
    threshold: float = 1.0


@dataclass(frozen=True)
class LoopConfig:
    bundle: Path
    source: str
    backend: str = "auto"
    artifact: str | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    allow_failed: bool = False
    trust: Path | None = None  # the bundle must be signed by this public key
    headless: bool = False
    json: bool = False
    min_confidence: float = 0.0
    every: int = 1  # classify every Nth frame
    save_dir: Path | None = None
    save_labels: tuple[str, ...] = ()  # empty: save every classified frame
    save_max_mb: float | None = None
    collect: CollectConfig | None = None
    record: Path | None = None
    max_frames: int | None = None
    roi: tuple[int, int, int, int] | None = None
    log_file: Path | None = None
    log_max_mb: float = 10.0
    log_backups: int = 5
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    gpio: GpioConfig | None = None
    on_trigger: CommandConfig | None = None
    mqtt: MqttConfig | None = None
    http: HttpConfig | None = None
    drift: DriftConfig = field(default_factory=DriftConfig)
    queue_size: int = 64
    parts: PartsConfig | None = None  # part inspection; None: free-running
    modbus: ServerAddress | None = None
    opcua: OpcuaConfig | None = None
    models: SwapConfig | None = None  # model swaps (--model-state, --inbox); None: off

    def __post_init__(self):
        checks = [
            # "" would be the working folder, read as a folder of images
            ("--source", str(self.source).strip() != "", "is empty: give a camera, file or URL"),
            ("--every", self.every >= 1, "must be at least 1"),
            ("--max-frames", self.max_frames is None or self.max_frames >= 1, "must be >= 1"),
            ("--min-confidence", 0.0 <= self.min_confidence <= 1.0, "must be within 0..1"),
            ("--save-max-mb", self.save_max_mb is None or self.save_max_mb > 0, "must be > 0"),
            ("--queue-size", self.queue_size >= 1, "must be at least 1"),
            ("--log-max-mb", self.log_max_mb > 0, "must be > 0"),
            ("--log-backups", self.log_backups >= 0, "must be >= 0"),
            ("--drift-window", self.drift.window >= 20, "must be at least 20"),
            ("--drift-threshold", self.drift.threshold > 0, "must be > 0"),
        ]
        for option, ok, why in checks:
            if not ok:
                raise EdgeclsError(f"{option} {why}")
        self._check_outputs_apart()

    def _check_outputs_apart(self) -> None:
        """An output written over the source video or into the bundle destroys what the run
        reads (a recording truncates the video it plays, a log appends to the manifest)."""
        inputs = [("the bundle", self.bundle)]
        if Path(self.source).exists():  # a file or folder; not a camera, URL or glob
            inputs.append(("the --source", Path(self.source)))
        outputs = (
            ("--record", self.record),
            ("--log-file", self.log_file),
            ("--save-dir", self.save_dir),
            ("--collect", self.collect.folder if self.collect else None),
        )
        for option, out in outputs:
            if out is None:
                continue
            where = Path(out).resolve()
            for what, read in inputs:
                read = read.resolve()
                if where == read or read in where.parents:
                    raise EdgeclsError(
                        f"{option} {out}: this would write into {what} ({read}), which the run "
                        "reads; write outputs elsewhere"
                    )


def _positive(x: float) -> bool:
    """A finite number > 0 (NaN compares false both ways, so `x <= 0` lets it through)."""
    return math.isfinite(x) and x > 0


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else ()


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise EdgeclsError(f"--roi {text}: give x,y,w,h as four whole numbers of pixels") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise EdgeclsError(f"--roi {text}: x and y must be >= 0, w and h at least 1")
    return (x, y, w, h)


def parse_mqtt(url: str, o: LoopOptions) -> MqttConfig:
    shown = redact(url)  # errors go to the journal: never the password (${VAR} or not)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6 bracket
        raise EdgeclsError(f"--mqtt {shown}: not a valid URL ({redact(str(exc))})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise EdgeclsError(f"--mqtt {shown}: use mqtt://host[:port]/prefix or mqtts://...")
    if ":" in parts.netloc and "@" in url.partition("://")[2] and "@" not in parts.netloc:
        # `u:ab/cd@host`: an unencoded "/" (? #) in a password ends the host early, and its
        # tail would be read as the port and the topic
        raise EdgeclsError(
            f"--mqtt {shown}: an '@' after the host; percent-encode / ? # in the password "
            "(%2F %3F %23), or an '@' in the topic prefix (%40)"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        port = 8883 if parts.scheme == "mqtts" else 1883
    if not 1 <= port <= 65535:
        raise EdgeclsError(f"--mqtt {shown}: the port is not a number in 1..65535")
    if not parts.hostname:
        raise EdgeclsError(f"--mqtt {shown}: no host")
    prefix = unquote(parts.path.strip("/")) or "edgecls"
    if "+" in prefix or "#" in prefix:
        raise EdgeclsError(
            f"--mqtt {shown}: the topic prefix {prefix!r} holds an MQTT wildcard (+ or #), which "
            "a topic one publishes to cannot; choose another"
        )
    if o.mqtt_publish not in ("frames", "decisions"):
        raise EdgeclsError(f"--mqtt-publish {o.mqtt_publish}: choose frames or decisions")
    for name in ("mqtt_ca", "mqtt_cert", "mqtt_key"):
        path, option = getattr(o, name), f"--{name.replace('_', '-')}"
        if path is None:
            continue
        if parts.scheme != "mqtts":  # else the user believes in TLS that is not there
            raise EdgeclsError(f"{option} is for TLS: use an mqtts:// URL in --mqtt {shown}")
        if not Path(path).is_file():
            why = "not a file" if Path(path).exists() else "no such file"
            raise EdgeclsError(f"{option} {path}: {why} (give the PEM file's path)")
    if o.mqtt_queue < 1:
        raise EdgeclsError("--mqtt-queue must be at least 1")
    return MqttConfig(
        host=parts.hostname,
        port=port,
        prefix=prefix,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca=o.mqtt_ca,
        cert=o.mqtt_cert,
        key=o.mqtt_key,
        publish=o.mqtt_publish,
        queue=o.mqtt_queue,
        **_fleet(o),
    )


def _fleet(o: LoopOptions) -> dict:
    """--group and --board-id, each one MQTT topic level."""
    from edgecls.fleet import check_name

    if o.group is None:
        return {}
    import socket

    board = o.board_id or socket.gethostname().split(".")[0]
    return {"group": check_name("--group", o.group), "board": check_name("--board-id", board)}


def parse_http(text: str, o: LoopOptions) -> HttpConfig:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise EdgeclsError(f"--http {text}: give [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    if o.http_user is not None and ":" not in o.http_user:
        raise EdgeclsError("--http-user: give USER:PASSWORD")
    if not _positive(o.stall_seconds):
        raise EdgeclsError("--stall-seconds must be a number > 0")
    if o.http_token == "":
        raise EdgeclsError("--http-token is empty: give a token, or leave the option out")
    host = host.strip("[]") or "127.0.0.1"
    if not (o.http_token or o.http_user or o.http_insecure or is_loopback(host)):
        raise EdgeclsError(
            f"--http {text} would serve the live view and every record to the network without "
            "auth: give --http-token TOKEN or --http-user USER:PASSWORD, or --http-insecure to "
            "serve it without auth on purpose"
        )
    return HttpConfig(
        host=host,
        port=int(port),
        token=o.http_token,
        user=o.http_user,
        stall_seconds=o.stall_seconds,
        insecure=o.http_insecure,
    )


def is_loopback(host: str) -> bool:
    """Whether a listening address serves this board only (127.0.0.0/8, ::1, localhost); a
    name other than localhost may resolve anywhere, so it counts as the network."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _to_config(o: LoopOptions) -> LoopConfig:
    if o.bundle is None:
        raise EdgeclsError("no bundle: give BUNDLE on the command line or `bundle:` in --config")
    for option, value in (
        ("--pulse-ms", o.pulse_ms),
        ("--on-trigger-timeout", o.on_trigger_timeout),
    ):
        if not _positive(value):
            raise EdgeclsError(f"{option} must be a number > 0, not {value}")
    parts = parse_parts(o)
    if (o.gpio or o.on_trigger) and not (o.trigger or parts):
        raise EdgeclsError("--gpio and --on-trigger act on decisions: give --trigger LABEL too")
    return LoopConfig(
        bundle=Path(o.bundle),
        source=o.source,
        backend=o.backend,
        artifact=o.artifact,
        runtime=RuntimeOptions(
            threads=o.threads,
            delegate=o.delegate,
            strict=o.strict,
            fp16=o.fp16,
            trt_cache=o.trt_cache,
            providers=_csv(o.providers) or None,
        ),
        capture=CaptureSettings(o.width, o.height, o.fps),
        allow_failed=o.allow_failed,
        trust=o.trust,
        headless=o.headless,
        json=o.json,
        min_confidence=o.min_confidence,
        every=o.every,
        save_dir=o.save_dir,
        save_labels=_csv(o.save_labels),
        save_max_mb=o.save_max_mb,
        collect=_collect(o) if o.collect else None,
        record=o.record,
        max_frames=o.max_frames,
        roi=parse_roi(o.roi),
        log_file=o.log_file,
        log_max_mb=o.log_max_mb,
        log_backups=o.log_backups,
        decision=DecisionConfig(_csv(o.trigger), o.consecutive, o.window, o.min_hits),
        gpio=GpioConfig(o.gpio, o.pulse_ms) if o.gpio else None,
        on_trigger=_command(o) if o.on_trigger else None,
        mqtt=parse_mqtt(o.mqtt, o) if o.mqtt else None,
        http=parse_http(o.http, o) if o.http else None,
        drift=DriftConfig(o.drift, o.drift_window, o.drift_threshold),
        queue_size=o.queue_size,
        parts=parts,
        modbus=parse_address("--modbus", o.modbus) if o.modbus else None,
        opcua=parse_opcua(o) if o.opcua else None,
        models=_models(o),
    )


def _models(o: LoopOptions) -> SwapConfig | None:
    if o.group is not None and not o.mqtt:
        raise EdgeclsError("--group takes rollouts from the broker: give --mqtt URL too")
    if o.board_id is not None and o.group is None:
        raise EdgeclsError("--board-id names this board in a --group: give --group too")
    return swap_config(
        o.model_state,
        o.inbox,
        o.group is not None,
        shadow_frames=o.shadow_frames,
        shadow_share=o.shadow_share,
        promote_agreement=o.promote_agreement,
        promote_latency=o.promote_latency,
    )


def parse_address(option: str, text: str) -> ServerAddress:
    host, _, port = str(text).rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise EdgeclsError(f"{option} {text}: give [HOST:]PORT, e.g. 5020 or 0.0.0.0:5020")
    return ServerAddress(host.strip("[]") or "127.0.0.1", int(port))


def parse_opcua(o: LoopOptions) -> OpcuaConfig:
    address = parse_address("--opcua", o.opcua)
    if o.opcua_user is not None and ":" not in o.opcua_user:
        raise EdgeclsError("--opcua-user: give USER:PASSWORD")
    if (o.opcua_cert is None) != (o.opcua_key is None):
        raise EdgeclsError("--opcua-cert and --opcua-key go together: give both or neither")
    for option, path in (("--opcua-cert", o.opcua_cert), ("--opcua-key", o.opcua_key)):
        if path is not None and not Path(path).is_file():
            raise EdgeclsError(f"{option} {path}: no such file (give the PEM file's path)")
    if not is_loopback(address.host) and not o.opcua_user:
        raise EdgeclsError(
            f"--opcua {o.opcua}: anonymous access is for 127.0.0.1 only; give --opcua-user "
            "USER:PASSWORD to serve the network"
        )
    return OpcuaConfig(address, o.opcua_user, o.opcua_cert, o.opcua_key)


SERVERS = {"--mqtt": "mqtt", "--http": "http", "--modbus": "modbus", "--opcua": "opcua"}


def parse_parts(o: LoopOptions) -> PartsConfig | None:
    """Part inspection when a --part-trigger is given; its servers need their option, and the
    PLC servers answer parts only."""
    texts = [t for given in (o.part_trigger or ()) for t in str(given).split(",") if t.strip()]
    if not texts:
        for option in ("--modbus", "--opcua"):
            if getattr(o, SERVERS[option]):
                raise EdgeclsError(
                    f"{option} answers parts: give --part-trigger too (e.g. {SERVERS[option]})"
                )
        return None
    specs = tuple(dict.fromkeys(TriggerSpec.parse(t) for t in texts))
    for spec in specs:
        option = PART_TRIGGERS.get(spec.kind).served_by
        if option and not getattr(o, SERVERS[option]):
            raise EdgeclsError(f"--part-trigger {spec.text} arrives through {option}: give it too")
    if o.every != 1:
        raise EdgeclsError("--every thins a free-running stream; a part takes --capture-frames")
    if o.consecutive != 1 or o.window is not None:
        raise EdgeclsError(
            "--consecutive and --window debounce a free-running stream; with --part-trigger "
            "a part's frames make its verdict (--capture-frames, --part-rule)"
        )
    return PartsConfig(
        triggers=specs,
        capture_delay_ms=o.capture_delay_ms,
        capture_frames=o.capture_frames,
        rule=o.part_rule,
        window_ms=o.inspect_window_ms,
        fail_safe=o.fail_safe,
        queue=o.part_queue,
        debounce_ms=o.trigger_debounce_ms,
        state=o.part_state,
        max_parts=o.max_parts,
        rejects=_csv(o.trigger),
    )


def _collect(o: LoopOptions) -> CollectConfig:
    return CollectConfig(
        folder=Path(o.collect),
        margin=o.collect_margin,
        confidence=o.collect_confidence,
        audit_per_minute=o.collect_audit,
        rate=o.collect_rate,
        max_mb=o.collect_max_mb,
    )


def _command(o: LoopOptions) -> CommandConfig:
    import shlex

    try:
        argv = tuple(shlex.split(o.on_trigger))
    except ValueError as exc:
        raise EdgeclsError(f"--on-trigger: cannot split the command ({exc})") from None
    if not argv:
        raise EdgeclsError("--on-trigger: empty command")
    return CommandConfig(argv, o.on_trigger_timeout)


# --- the device file -------------------------------------------------------------------------


MAX_DEVICE_FILE_BYTES = 1_000_000  # a device file is tens of lines


def read_device_file(path: Path) -> dict:
    """The options a device file sets, checked against LoopOptions by the one typed loader
    (edgecls.schema): an unknown key or a wrong value is one error line naming the key."""
    import yaml

    from edgecls.schema import FileRefused, from_dict, read_limited

    path = Path(path)
    try:
        text = read_limited(path, MAX_DEVICE_FILE_BYTES, "a device file").decode("utf-8")
        data = yaml.safe_load(text)
    except FileRefused as exc:  # a FIFO, /dev/zero, a huge file: refused before it is read
        raise EdgeclsError(f"--config {path}: {exc}") from None
    except RecursionError:
        raise EdgeclsError(f"{path}: nested too deep to be a device file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise EdgeclsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EdgeclsError(f"{path}: expected `option: value` lines at the top level")
    data = {(key := str(k).replace("-", "_")): _loosen(key, v, path) for k, v in data.items()}
    options = from_dict(LoopOptions, data, str(path))
    return {name: getattr(options, name) for name in data}


def _args(tp) -> tuple:
    return typing.get_args(tp) or (tp,)


_STR_FIELDS = {n for n, t in typing.get_type_hints(LoopOptions).items() if str in _args(t)}


_LIST_FIELDS = {n for n, t in typing.get_type_hints(LoopOptions).items() if list[str] in _args(t)}


_VARIABLE = re.compile(r"\$\{(\w+)\}")


def _variable(path: Path, name: str, variable: str) -> str:
    if not (value := os.environ.get(variable)):
        raise EdgeclsError(
            f"{path}: {name}: ${{{variable}}} is not set (or empty); set it in the service's "
            "EnvironmentFile or the environment, or write the value itself"
        )
    return value


def _loosen(name: str, value, path: Path):
    """What YAML reads differently from the command line: `source: 0` and `gpio: 17` are numbers,
    `trigger: [def, crack]` a list; ${VAR} pulls a secret from the service's EnvironmentFile. An
    unset or empty variable is an error: left as it is, `${TOKEN}` would be the token itself. Only
    the braced form is a variable, so a password such as `pa$$word` stays as written."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda match: _variable(path, name, match[1]), value)
    if name in _STR_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if name in _STR_FIELDS and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if name in _LIST_FIELDS and not isinstance(value, list):
        return [str(value)]  # `part_trigger: mqtt`: one of a list
    return value


def merge_options(file_options: dict, given: dict) -> LoopOptions:
    """Defaults, then the device file, then what was given on the command line."""
    return LoopOptions(**{**file_options, **given})
