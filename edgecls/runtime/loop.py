"""`edgecls run`: the camera loop on the board.

Frames become records (label, probabilities, timing, source, bundle identity, ROI); a decision
rule turns records into decisions; sinks consume both, those that do I/O on their own threads
(JSON log, MQTT, GPIO, on-trigger, saved frames, recording, window), so a slow broker or disk
never slows the loop, the quick ones (the live view's hand-over, drift) inline. Corrupt frames
are skipped and counted, a dropped live source is reopened, Ctrl-C and SIGTERM end cleanly with
a summary and flushed outputs. Memory stays constant however long it runs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.bundle import anomaly
from edgecls.bundle.backends import Predictor
from edgecls.bundle.folder import Bundle, load_bundle
from edgecls.bundle.signing import verify_bundle
from edgecls.errors import EdgeclsError
from edgecls.redact import one_line, redact
from edgecls.runtime import systemd
from edgecls.runtime.decisions import DecisionRule
from edgecls.runtime.loop_options import LoopConfig
from edgecls.runtime.loop_probe import NOMINAL_SIZE
from edgecls.runtime.models.intake import Loaded, Loader
from edgecls.runtime.models.manager import ModelManager
from edgecls.runtime.models.state import ModelState, identify, resume
from edgecls.runtime.parts import Station
from edgecls.runtime.parts.triggers import PART_TRIGGERS
from edgecls.runtime.records import Identity, PartCounts, Record, Summary
from edgecls.runtime.select import Choice, Probe, choose
from edgecls.runtime.sinks import SinkContext, Sinks, build_sinks
from edgecls.runtime.sinks.recording import source_fps
from edgecls.runtime.sources import Frame, Source, SourceEnded, frame_size, open_source

__all__ = ["LoopConfig", "Summary", "run"]

HEARTBEAT_SECONDS = 2.0
# each ends the run cleanly (outputs flushed, the recording finished): Ctrl-C, systemctl stop, and
# the terminal closing under a run started by hand (SIGHUP would kill it mid-write)
STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []),
)


class _Stop:
    """A stop signal sets a flag the loop checks, so outputs are flushed and the camera released."""

    def __init__(self):
        self.event = threading.Event()
        self.signal: int | None = None  # the first that came
        self._also: list[threading.Event] = []
        self._previous = {}

    def follow(self, event: threading.Event | None) -> None:
        """Also set `event` (a live source's own) on a signal, so its waits end too."""
        if event is not None and event is not self.event:
            self._also.append(event)

    def _set(self, signum, _frame):
        if self.signal is None:
            self.signal = signum
        self.event.set()
        for event in self._also:
            event.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # `nohup edgecls run ... &`: asked to outlive a logout, it does
                self._previous[sig] = signal.signal(sig, self._set)
        return self.event

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class RoiOutside(EdgeclsError):
    """--roi reaches past this frame: a setting error for a camera, one bad image in a folder."""


@dataclass
class _Classifier:
    """Frame -> Record: the ROI crop, the one preprocessing function, the model."""

    predictor: Predictor
    prepare: Callable[[np.ndarray], np.ndarray]  # the frame work, where the source did not
    identity: Identity
    source: str
    min_confidence: float
    keep_image: bool
    keep_input: bool
    last_input: np.ndarray | None = field(default=None, repr=False)  # for a candidate's shadow

    def __call__(self, frame: Frame) -> Record:
        x = frame.prepared
        if isinstance(x, Exception):
            raise x
        if x is None:  # a source without a thread of its own: made here
            x = self.prepare(frame.image)
        self.last_input = x
        t0 = time.perf_counter()
        spec = self.identity.anomaly
        if spec is None:
            probs, score, heat = self.predictor.predict(x[None])[0], None, None
        else:  # one inference: the verdict, the score and the map from the same output
            raw = self.predictor.outputs(x[None])
            probs, heat = anomaly.probabilities(raw)[0], anomaly.maps(raw, spec.map_size)[0]
            score = float(raw[0, 0]) + spec.threshold
        latency = (time.perf_counter() - t0) * 1000
        top = int(np.argmax(probs))
        confidence = float(probs[top])
        labels = self.identity.labels
        return Record(
            frame=frame.index,
            time=time.time(),
            label=labels[top] if confidence >= self.min_confidence else None,
            top=labels[top],
            confidence=confidence,
            probs=tuple(probs.tolist()),
            latency_ms=latency,
            source=self.source,
            identity=self.identity,
            name=frame.name,
            image=frame.image if self.keep_image else None,
            model_input=x if self.keep_input else None,
            score=score,
            anomaly_map=heat,
        )


def frame_work(bundle: Bundle, roi) -> Callable[[np.ndarray], np.ndarray]:
    """The work on a frame before the model: ROI crop, resize, colours (the one preprocessing
    function). Thread-safe: a source's own thread runs it too."""
    spec = bundle.input_spec
    return lambda image: spec.frame_to_input(crop(image, roi))


def _probe(config: LoopConfig, prepare) -> Probe:
    """The frames `auto` measures the loop on: the source's size where known, and always large
    enough for the ROI."""
    w, h = frame_size(config.source, config.capture) or NOMINAL_SIZE
    if config.roi is not None:
        x, y, rw, rh = config.roi
        w, h = max(w, x + rw), max(h, y + rh)
    return Probe((w, h), prepare, config.roi)


def crop(image: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    if roi is None:
        return image
    x, y, w, h = roi
    if x + w > image.shape[1] or y + h > image.shape[0]:
        raise RoiOutside(
            f"--roi {x},{y},{w},{h}: outside the {image.shape[1]}x{image.shape[0]} frame "
            "of this source; give a region inside it"
        )
    return image[y : y + h, x : x + w]


def _check(config: LoopConfig, bundle: Bundle) -> None:
    unknown = sorted(set(config.save_labels) - set(bundle.labels))
    if unknown:
        raise EdgeclsError(
            f"--save-labels {','.join(unknown)}: not in the bundle's labels "
            f"({', '.join(bundle.labels)})"
        )
    if config.parts is not None:
        config.parts.check_labels(bundle.labels)
    config.decision.check_labels(bundle.labels)


def _drift_sinks(config: LoopConfig, bundle: Bundle) -> list:
    reference = bundle.manifest.drift_reference
    if not (config.drift.enabled and reference):
        return []
    from edgecls.runtime.sinks.drift import DriftSink

    return [DriftSink(reference, config.drift.window, config.drift.threshold)]


def run(
    config: LoopConfig, out=None, log=None, source: Source | None = None, began: float | None = None
) -> Summary:
    """Run the loop until the source ends, max_frames, the window closes, or a signal. `began`
    (monotonic) is where the cold start counts from: the CLI gives its process's start."""
    out = out or sys.stdout
    shown = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    log = lambda msg: shown(one_line(redact(msg)))  # noqa: E731 (no password, one line each)
    start = _start_model(config, log)
    bundle, prepare, choice, identity = start.bundle, start.prepare, start.choice, start.identity
    stopper, summary = _Stop(), Summary(began=time.monotonic() if began is None else began)
    with stopper as stop:  # from here a signal ends the run cleanly, even while starting
        context = SinkContext(
            summary, stopper.event, log, identity, frozenset(config.decision.trigger), out=out
        )
        station = _station(config, identity, summary, log)
        context.station = station
        context.models = models = _models(config, start, summary, context, stopper.event, log)
        sinks = build_sinks(config, context, _drift_sinks(config, bundle)).open()
        source, triggers = _open_source(config, source, stopper, context, sinks)
        context.source_fps = lambda: source_fps(source, config.source)
        if not stop.is_set():  # stopped while the source opened: the summary says the rest
            _started(config, choice, source, sinks, log)
        needs = sinks.needs()
        classify = _Classifier(
            choice.predictor, prepare, identity, source.name, config.min_confidence,
            keep_image="image" in needs, keep_input="model_input" in needs,
        )  # fmt: skip
        if choice.overlap:  # on the source's own thread, beside the model
            source.prepare = prepare
        summary.started = time.monotonic()
        try:
            if models is not None:
                models.start()
            if station is None:
                _loop(config, source, classify, sinks, summary, stop, log, models)
            else:
                _inspect_parts(config, source, classify, sinks, summary, stop, log, station, models)
        finally:
            if models is not None:
                models.close()
            _close_parts(station, triggers)  # every open part answered before the outputs close
            _finish(summary, source, sinks, log)
    # SIGTERM is how a service is stopped (exit 0); Ctrl-C or a closed terminal interrupt a run
    # (the shell's 128 + the signal: 130, 129)
    summary.interrupted_by = None if stopper.signal == signal.SIGTERM else stopper.signal
    return summary


@dataclass(frozen=True)
class _Start:
    """The model the run starts with, chosen and loaded, and the model state it came from."""

    bundle: Bundle
    prepare: Callable[[np.ndarray], np.ndarray]
    choice: Choice
    identity: Identity
    state: ModelState | None  # with model swaps on


def _start_model(config: LoopConfig, log) -> _Start:
    """The bundle (the model state's active one where swaps are on), checked before a byte of
    it is believed, its artifact chosen and loaded."""
    path, state = config.bundle, None
    if config.models is not None:
        path, state = resume(config.models, config.bundle, config.trust, log)
    if config.trust is not None:
        verify_bundle(path, config.trust)
    bundle = load_bundle(path)
    _check(config, bundle)
    _more_descriptors()
    prepare = frame_work(bundle, config.roi)
    choice = choose(
        bundle, config.backend, config.artifact, config.runtime, config.allow_failed, log=log,
        probe=None if config.artifact else _probe(config, prepare),  # auto's only
    )  # fmt: skip
    for w in [*choice.predictor.warnings, bundle.unchecked_here()]:
        if w:
            log(f"warning: {w}")
    identity = Identity.of(bundle, choice.artifact, config.roi)
    return _Start(bundle, prepare, choice, identity, state)


def _models(config, start: _Start, summary, context, stop, log) -> ModelManager | None:
    """With model swaps on: the thread that takes candidates, shadows and promotes them."""
    if config.models is None:
        return None
    loader = Loader(
        config.backend, config.artifact, config.runtime, config.allow_failed, config.trust,
        config.roi, lambda: _probe(config, start.prepare),
    )  # fmt: skip
    ref = start.state.active or identify(start.bundle.root)
    active = Loaded(ref, start.bundle, start.choice, start.identity)
    manager = ModelManager(config.models, start.state, active, loader, summary, log, stop)

    def swapped(loaded: Loaded) -> None:  # what shows the model: /metrics, the view, parts
        context.identity = loaded.identity
        if context.station is not None:
            context.station.identity = loaded.identity

    manager.on_swap = swapped
    return manager


def process_started() -> float:
    """The monotonic time this process began (Linux: its start tick, 10 ms steps), so a cold
    start counts the imports too; elsewhere, now."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(stat[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(0.0, age)


def _more_descriptors(wanted: int = 65536) -> None:
    """Each client of a server (HTTP, Modbus, OPC UA) holds a file descriptor: the soft limit
    (1024 under systemd) is raised toward the hard one, so a crowd of idle clients cannot leave
    the camera, the log or /health without one (the servers bound their clients too)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass  # not Unix, or not allowed: the limit stays as it is


def _open_source(config: LoopConfig, source, stopper: _Stop, context: SinkContext, sinks):
    """The source and the part triggers that run on their own; the outputs are open. On a
    failure everything opened so far is closed (the camera released) and open parts answered."""
    station = context.station
    if station is not None:  # the servers take triggers from now on: so do the windows
        station.start(sinks.publish, redact(str(config.source), keep_user=False))
    triggers, opened = [], source
    try:
        source = opened = source or open_source(config.source, config.capture, stopper.event)
        stopper.follow(source.stop)
        context.live = source.live
        if station is not None:
            station.source = source.name
            triggers = _start_triggers(config, station, context.log)
    except BaseException:
        _close_parts(station, triggers)
        if opened is not None:
            opened.close()
        sinks.close()
        raise
    return source, triggers


def _started(config: LoopConfig, choice, source: Source, sinks: Sinks, log) -> None:
    a = choice.artifact
    log(
        f"running {a.file} ({a.format} {a.precision}, "
        f"parity {'passed' if a.passed else 'FAILED'}) on "
        f"{choice.predictor.description}; chosen: {choice.reason}; source: {source.name}"
        + (f"; outputs: {', '.join(sinks.names)}" if sinks.names else "")
    )
    if config.drift.enabled and "drift" not in sinks.names:
        log("drift: off (this bundle has no reference statistics; re-export it to add them)")
    if config.parts is not None:
        p = config.parts
        log(
            f"parts: triggered by {', '.join(t.text for t in p.triggers)}; "
            f"{p.capture_frames} frame(s) from {p.capture_delay_ms:g} ms after the trigger, "
            f"verdict by {p.rule}, within {p.window_ms:g} ms or fail-safe {p.fail_safe}"
        )


def _station(config: LoopConfig, identity: Identity, summary: Summary, log) -> Station | None:
    if config.parts is None:
        return None
    summary.parts = PartCounts()
    return Station(config.parts, identity, summary.parts, config.min_confidence, log)


def _start_triggers(config: LoopConfig, station: Station, log) -> list:
    """The triggers that run on their own (a pin, a clock); the servers' run in their outputs."""
    started = []
    try:
        for spec in config.parts.triggers:
            start = PART_TRIGGERS.get(spec.kind).start
            if start is not None:
                started.append(start(spec.arg, station, config.parts, log))
    except BaseException:
        _close_parts(None, started)
        raise
    return started


def _close_parts(station: Station | None, triggers: list) -> None:
    for trigger in triggers:
        trigger.close()
    if station is not None:
        station.close()


def _loop(config, source: Source, classify, sinks: Sinks, summary, stop, log, models) -> None:
    rule = DecisionRule(config.decision)
    watchdog = systemd.Watchdog()
    last_status = time.monotonic()
    while not stop.is_set():
        if models is not None and models.pending is not None:  # between two frames
            classify = models.swap_into(classify)
        if config.max_frames is not None and summary.classified >= config.max_frames:
            return
        frame = _read(source, summary, watchdog)
        if frame is None:
            return
        skip = frame.index % config.every  # --every N: only every Nth frame is classified
        if frame.image is None:
            summary.corrupt += 1
            if frame.name and not skip:  # a folder's image this run was to classify
                _unreadable(summary, frame.problem or f"{frame.name}: not readable", log)
            continue
        if skip:
            continue
        record = _classify(classify, frame, summary, log)
        if record is None:
            continue
        _count(summary, record)
        sinks.publish(record)
        if models is not None and models.listening:  # newest-wins: never waits
            models.offer(record, classify.last_input, frame.image)
        decision = rule.update(record)
        if decision is not None:
            summary.decisions += 1
            sinks.publish(decision)
        if summary.last_frame - last_status >= HEARTBEAT_SECONDS:
            last_status = summary.last_frame
            _heartbeat(config, summary, record, log)


def _inspect_parts(config, source, classify, sinks, summary, stop, log, station, models) -> None:
    """Frames for the oldest open part, each captured after its trigger + delay; a live source
    is read all along (the newest frame, for /health and the view), a file only for a part."""
    watchdog = systemd.Watchdog()
    last_status, record = time.monotonic(), None
    while not (stop.is_set() or station.done.is_set()):
        if models is not None and models.pending is not None:  # between two frames
            classify = models.swap_into(classify)
        if config.max_frames is not None and summary.classified >= config.max_frames:
            return
        if not source.live and not _part_due(station, stop):
            continue
        frame = _read(source, summary, watchdog)
        if frame is None:
            return
        if summary.frames == 1:
            systemd.ready()
        # a file's frames have no capture time: the next one read is the part's
        captured = frame.captured if source.live else summary.last_frame
        part = station.current()
        summary.corrupt += frame.image is None
        if part is not None and frame.image is None and frame.name:
            _unreadable(summary, frame.problem or f"{frame.name}: not readable", log)
        elif part is not None and frame.image is not None and captured >= part.capture_at:
            record = _classify(classify, frame, summary, log)
            if record is None:
                continue
            record.part = part.id
            _count(summary, record)
            sinks.publish(record)
            station.add_frame(part, record, captured)
            if models is not None and models.listening:
                models.offer(record, classify.last_input, frame.image)
        if summary.last_frame - last_status >= HEARTBEAT_SECONDS:
            last_status = summary.last_frame
            _heartbeat(config, summary, record, log)


def _part_due(station, stop) -> bool:
    """From a file: wait for a part and its capture time before reading the next frame."""
    part = station.wait(0.1)
    if part is None:
        return False
    return not stop.wait(max(0.0, part.capture_at - time.monotonic()))


def _read(source: Source, summary: Summary, watchdog) -> Frame | None:
    """The next frame, counted; None when the source has ended."""
    try:
        frame = source.read()
    except SourceEnded:
        return None
    summary.frames += 1
    summary.last_frame = time.monotonic()
    _source_counts(summary, source)
    watchdog.ping()
    return frame


def _classify(classify, frame: Frame, summary: Summary, log) -> Record | None:
    """The frame's record; None for a folder's image the ROI does not fit (named, counted)."""
    try:
        return classify(frame)
    except RoiOutside as exc:
        if not frame.name:  # a camera or video: every frame has this size
            raise
        _unreadable(summary, f"{frame.name}: {exc}", log)
        return None


UNREADABLE_SHOWN = 20  # named in the log; the rest are counted in the summary


def _unreadable(summary: Summary, why: str, log) -> None:
    """An image of a folder that could not be classified: named, counted, and the run exits 1."""
    summary.unreadable += 1
    if summary.unreadable <= UNREADABLE_SHOWN:
        log(f"warning: skipped {why}")
    if summary.unreadable == UNREADABLE_SHOWN:
        log("warning: further unreadable images are counted in the summary, not named")


def _source_counts(summary: Summary, source: Source) -> None:
    summary.reconnects = source.reconnects
    summary.skipped = source.dropped_frames


def _count(summary: Summary, record: Record) -> None:
    summary.classified += 1
    summary.latency.add(record.latency_ms)
    summary.labels[record.label or "uncertain"] += 1
    if summary.classified == 1:
        summary.first_record = time.monotonic() - summary.began
        systemd.ready()


def _heartbeat(config, summary: Summary, record: Record | None, log) -> None:
    """A line for headless logs (unless records go to stdout), and systemctl status."""
    text = f"{summary.classified} frames, {summary.fps():.1f} FPS"
    if record is not None:
        text += f", last: {record.label or 'uncertain'} {record.confidence:.2f}"
    if summary.parts is not None:
        text += f", {summary.parts.text()}"
    if summary.drift.get("state") == "drift":
        text += f", DRIFT {summary.drift['score']:.2f}"
    systemd.status(text)
    if not config.json:
        log(text)


def _finish(summary: Summary, source: Source, sinks: Sinks, log) -> None:
    systemd.stopping()
    summary.seconds = time.monotonic() - summary.started
    _source_counts(summary, source)
    try:
        source.close()
    finally:
        sinks.close()  # drained and closed whatever the source does: no lost records
    if source.ended_early:
        log(f"warning: {source.ended_early}")
    log(summary.text())
