"""Collection on the board (`--collect DIR`): which frames are kept and why, on a scripted record
stream; the audit sample's class balance; the rate limit; the quota, which deletes only unlabelled
frames of ours; a full or read-only disk (one warning, counted, the loop goes on); and a real run
that fills the queue with images and sidecars."""

from __future__ import annotations

import errno
import json
import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner
from videos import write_video

from edgecls.cli import app
from edgecls.runtime.collection.rules import BURST, CollectConfig, CollectRules
from edgecls.runtime.collection.store import HIDDEN, QUEUE, CollectStore
from edgecls.runtime.loop import run
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.records import Identity, Record, Summary
from edgecls.runtime.sinks import SinkContext
from edgecls.runtime.sinks.collect import CollectSink

LABELS = ("good", "bad")
IDENTITY = Identity("line", "model.tflite", "0" * 64, LABELS)


def record(i: int, t: float, probs=(0.95, 0.05), image: np.ndarray | None = None) -> Record:
    top = int(np.argmax(probs))
    return Record(
        frame=i, time=t, label=LABELS[top], top=LABELS[top], confidence=max(probs),
        probs=tuple(probs), latency_ms=1.0, source="test", identity=IDENTITY, image=image,
    )  # fmt: skip


def rules(**kw) -> CollectRules:
    return CollectRules(CollectConfig(Path("unused"), seed=1, **kw), LABELS)


def test_each_reason_on_its_own():
    r = rules(audit_per_minute=0)
    assert r.reasons(record(0, 0.0, (0.95, 0.05)), drifting=False) == ()
    assert r.reasons(record(1, 0.0, (0.55, 0.45)), drifting=False) == ("margin", "confidence")
    assert r.reasons(record(2, 0.0, (0.62, 0.38)), drifting=False) == ()  # margin 0.24, conf 0.62
    assert r.reasons(record(3, 0.0, (0.56, 0.44)), drifting=False) == ("margin", "confidence")
    strict = rules(audit_per_minute=0, margin=0.3, confidence=0.5)
    assert strict.reasons(record(4, 0.0, (0.62, 0.38)), drifting=False) == ("margin",)
    assert r.reasons(record(5, 0.0), drifting=True) == ("drift",)
    three = CollectRules(CollectConfig(Path("x"), audit_per_minute=0), ("a", "b", "c"))
    probs = (0.45, 0.40, 0.15)  # a small margin between the first two of three
    rec = Record(6, 0.0, "a", "a", 0.45, probs, 1.0, "t", Identity("l", "m", "0", ("a", "b", "c")))
    assert three.reasons(rec, drifting=False) == ("margin", "confidence")


def test_the_audit_sample_covers_every_class_evenly_on_a_skewed_line():
    """A line of 90% good parts: the audit keeps about as many bad as good frames, each class
    on its own jittered clock, and no class goes unaudited for long."""
    r = rules(audit_per_minute=6.0, rate=100.0)  # each class every ~20 s
    rng = np.random.default_rng(0)
    kept: Counter = Counter()
    times: dict[str, list[float]] = {"good": [], "bad": []}
    for i in range(3600):  # an hour at one part a second
        t = float(i)
        probs = (0.97, 0.03) if rng.random() < 0.9 else (0.04, 0.96)
        rec = record(i, t, probs)
        reasons = r.reasons(rec, drifting=False)
        if reasons and r.admit(t):
            assert reasons == ("audit",)
            r.kept(rec, reasons)
            kept[rec.top] += 1
            times[rec.top].append(t)
    assert 120 <= kept["good"] <= 240 and 100 <= kept["bad"] <= 240, kept  # ~180 each
    assert 0.7 <= kept["bad"] / kept["good"] <= 1.3, kept  # not 1:9 as the line
    for label, ts in times.items():
        gaps = np.diff(ts)
        assert gaps.min() >= 5.0 - 1e-9, label  # never faster than a quarter of the period
        assert len(set(np.round(gaps))) > 5, label  # jittered, not in phase with the line


def test_the_rate_limit_is_shared_by_every_reason_and_bursts_at_most_burst():
    r = rules(rate=2.0, audit_per_minute=0)
    admitted = [t / 10 for t in range(100) if r.admit(t / 10)]  # 10 s of unsure frames at 10 FPS
    assert BURST + 2 * 9 <= len(admitted) <= BURST + 2 * 10
    assert admitted[:BURST] == [0.0, 0.1, 0.2, 0.3, 0.4]
    with pytest.raises(Exception, match="--collect-rate must be > 0"):
        CollectConfig(Path("x"), rate=0)


def _context(logs: list) -> SinkContext:
    return SinkContext(Summary(), threading.Event(), logs.append, IDENTITY)


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _feed(sink: CollectSink, frames: range, t0: float = 0.0) -> None:
    for i in frames:
        event = record(i, t0 + i, (0.55, 0.45), _noise(i))
        if sink.wants(event):
            sink.handle(event)


def test_the_quota_deletes_only_unlabelled_frames_of_ours(tmp_path):
    folder = tmp_path / "collect"
    (folder / "good").mkdir(parents=True)
    (folder / "good" / "mine.jpg").write_bytes(b"a user's file")
    logs: list[str] = []
    context = _context(logs)
    one = len(cv2.imencode(".jpg", _noise(0), [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    sink = CollectSink(CollectConfig(folder, rate=100.0, max_mb=4.5 * one / 2**20, seed=0))
    sink.open(context)
    store: CollectStore = context.collect
    _feed(sink, range(3))
    first = sorted(p.name for p in store.path(QUEUE).iterdir())
    store.label(first[0], "bad", "inspector")  # a person's work from now on
    (store.path(QUEUE) / "notes.txt").write_text("not ours")
    _feed(sink, range(3, 12))
    queued = sorted(p.name for p in store.path(QUEUE).iterdir() if p.name.startswith("c-"))
    assert 2 <= len(queued) <= 4, queued  # within the quota, newest kept
    assert queued[-1].endswith("f00000011.jpg")
    assert (folder / "bad" / first[0]).is_file() and store.sidecar(first[0])["label"] == "bad"
    assert (folder / "good" / "mine.jpg").read_bytes() == b"a user's file"
    assert (store.path(QUEUE) / "notes.txt").is_file()
    metas = {p.stem for p in store.path("meta").iterdir()}
    assert metas == {Path(n).stem for n in [*queued, first[0]]}  # no sidecar left orphaned
    assert context.summary.collected == 12 and not logs


def test_a_full_disk_pauses_collection_with_one_warning_and_resumes(tmp_path, monkeypatch):
    from edgecls.runtime.sinks import collect

    logs: list[str] = []
    context = _context(logs)
    sink = CollectSink(CollectConfig(tmp_path / "c", rate=100.0, seed=0))
    sink.open(context)
    free = {"bytes": 10 << 20}
    usage = collect.shutil.disk_usage
    monkeypatch.setattr(
        collect.shutil, "disk_usage", lambda p: usage(p)._replace(free=free["bytes"])
    )
    _feed(sink, range(5))
    assert context.summary.collected == 0 and context.summary.outputs_dropped["collect"] == 5
    assert len(logs) == 1 and "the disk has 10 MB left" in logs[0] and "--collect" in logs[0]
    free["bytes"] = 1 << 30
    _feed(sink, range(5, 8))
    assert context.summary.collected == 3 and len(logs) == 2 and "collecting" in logs[1]


@pytest.fixture(scope="module")
def bundle(insects_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "insects"
    args = ["export", str(insects_run), "--out", str(out), "--format", "tflite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def video(insects_data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "line.mp4"
    write_video(path, sorted((insects_data / "test").rglob("*.jpg")), repeat=2, fps=20.0)
    return path


def _every_frame(bundle, source, folder, **kw) -> LoopOptions:
    """Every frame counts as unsure (margin 1.0), no rate limit to speak of."""
    return LoopOptions(
        bundle=bundle, source=str(source), headless=True, collect=folder, collect_margin=1.0,
        collect_rate=1000.0, **kw,
    )  # fmt: skip


def test_a_run_keeps_frames_with_sidecars_and_the_roi(bundle, video, tmp_path):
    folder = tmp_path / "line1"
    args = ["run", str(bundle), "--source", str(video), "--headless", "--collect", str(folder)]
    args += ["--collect-margin", "1.0", "--collect-rate", "1000", "--roi", "8,8,80,80"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    queue = sorted((folder / HIDDEN / QUEUE).glob("c-*.jpg"))
    summary = [line for line in result.output.splitlines() if line.startswith("summary:")][-1]
    assert f"collected {len(queue)} for labelling" in summary and len(queue) > 100
    meta = json.loads((folder / HIDDEN / "meta" / f"{queue[0].stem}.json").read_text())
    assert "margin" in meta["reasons"] and meta["roi"] == [8, 8, 80, 80]
    assert meta["record"]["frame"] == int(queue[0].stem.rpartition("-f")[2])
    assert meta["bundle"]["sha256"] and meta["size"] == [80, 80]
    assert cv2.imread(str(queue[0])).shape[:2] == (80, 80)  # what the model saw
    whole = folder / HIDDEN / "full" / queue[0].name
    assert cv2.imread(str(whole)).shape[:2] == (96, 96)  # and the frame as the camera gave it
    again = run(_every_frame(bundle, video, folder).to_config(), log=print)
    assert len(list((folder / HIDDEN / QUEUE).glob("c-*.jpg"))) == len(queue) + again.collected


def test_a_folder_that_cannot_be_written_is_one_warning_and_the_loop_goes_on(
    bundle, video, tmp_path, monkeypatch
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    logs: list[str] = []
    summary = run(_every_frame(bundle, video, blocker / "c").to_config(), log=logs.append)
    assert summary.classified > 100 and summary.collected == 0
    assert summary.outputs_dropped["collect"] == summary.classified
    warned = [m for m in logs if "--collect" in m]
    assert len(warned) == 1 and "the loop goes on" in warned[0]
    assert blocker.read_text() == "not a folder"

    from edgecls.runtime.collection import store

    def read_only(folder, name, data):  # the card turned read-only while running
        raise OSError(errno.EROFS, "Read-only file system", str(folder / name))

    monkeypatch.setattr(store, "_write", read_only)
    logs.clear()
    summary = run(_every_frame(bundle, video, tmp_path / "ro").to_config(), log=logs.append)
    assert summary.classified > 100 and summary.collected == 0
    failed, dropped = summary.output_errors["collect"], summary.outputs_dropped["collect"]
    assert failed > 100 and failed + dropped == summary.classified  # dropped: the rate limit
    assert sum("output collect failed (Read-only file system" in m for m in logs) == 1
