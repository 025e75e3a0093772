"""A running line changes its model: a candidate bundle comes in (--inbox, POST /deploy), is
copied into the state folder and checked, runs in shadow on the live frames, and is promoted
between two frames or refused; rollback restores the previous bundle; the model state file says
which bundle runs and why, and a SIGKILL at any step restarts into a whole, approved bundle."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import pytest
from mjpeg_server import MjpegServer, free_port
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.runtime.loop import run
from edgecls.runtime.loop_options import LoopOptions
from edgecls.runtime.sources import Frame, Source, SourceEnded


def _export(run_dir: Path, out: Path, *extra: str) -> Path:
    args = ["export", str(run_dir), "--out", str(out), "--format", "tflite", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def active(insects_run, tmp_path_factory) -> Path:
    """The insect model as a float32 TFLite bundle: the model the line runs first. Named apart
    from the int8 bundle (whose chosen artifact may be this very float32 file, by the CPU), so
    records show which bundle decided them."""
    return _export(insects_run, tmp_path_factory.mktemp("active") / "insects-v1")


@pytest.fixture(scope="module")
def weak(insects_data, tmp_path_factory) -> Path:
    """A model of the same labels and input trained for one epoch: it passes every check but
    agrees little with the active model."""
    from edgecls.train import TrainConfig, train
    from edgecls.train.models import ModelConfig

    out = tmp_path_factory.mktemp("weak")
    cfg = ModelConfig("seed-cnn", (64, 64))
    train(TrainConfig(data=insects_data, out=out / "run", model=cfg, epochs=1, seed=7,
                      augment=False))  # fmt: skip
    return _export(out / "run", out / "weak")


@pytest.fixture(scope="module")
def images(insects_data) -> list:
    return [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))]


class Looping(Source):
    """The test images again and again at a camera's pace, frame indices contiguous, until
    `end` is set: a live line under load for as long as a test needs."""

    live = False  # the outputs wait instead of dropping: every record reaches the JSON lines

    def __init__(self, images, seconds: float = 0.004):
        self.images, self.seconds, self.i = images, seconds, 0
        self.name, self.end = "looping", threading.Event()

    def read(self) -> Frame:
        if self.end.is_set():
            raise SourceEnded
        time.sleep(self.seconds)
        frame = Frame(self.i, self.images[self.i % len(self.images)])
        self.i += 1
        return frame


class Lines:
    def __init__(self):
        self.rows, self.times = [], []

    def write(self, s):
        for line in s.splitlines():
            self.rows.append(json.loads(line))
            self.times.append(time.monotonic())

    def flush(self):
        pass


def _wait(what, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return False


def _state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _drop(bundle: Path, inbox: Path, name: str) -> None:
    """As an export or rsync would: written beside, renamed into the inbox whole."""
    shutil.copytree(bundle, inbox / f".{name}")
    os.rename(inbox / f".{name}", inbox / name)


def _run_with(options: LoopOptions, images, act) -> tuple:
    """The loop in this thread on a looping source, `act(source, logs, out)` on another; the
    source ends when it returns (or fails)."""
    source, logs, out, failed = Looping(images), [], Lines(), []

    def acting():
        try:
            act(source, logs, out)
        except BaseException as exc:
            failed.append(exc)
        finally:
            source.end.set()

    thread = threading.Thread(target=acting, daemon=True)
    thread.start()
    summary = run(options.to_config(), out=out, log=logs.append, source=source)
    thread.join(10)
    if failed:
        raise failed[0]
    return summary, logs, out.rows, out.times


def _act_and_run_on(port: int, action: str, swaps: int, logs: list, out) -> None:
    """An operator's action by POST /deploy, the swap it makes (the `swaps`-th "model: running"
    line), and 20 more frames after it."""
    assert _post(port, {"action": action})[0] == 202
    assert _wait(lambda: sum("model: running" in m for m in logs) == swaps), logs
    n = len(out.rows)
    assert _wait(lambda: len(out.rows) >= n + 20)


def _contiguous(rows) -> list[int]:
    frames = [r["frame"] for r in rows if r["type"] == "frame"]
    assert frames == list(range(len(frames))), "a frame lost or classified twice"
    return frames


def test_an_inbox_candidate_is_shadowed_and_swapped_in_between_two_frames(
    active, int8_bundle, images, tmp_path
):
    inbox, state = tmp_path / "inbox", tmp_path / "state" / "model-state.json"
    inbox.mkdir()
    opts = LoopOptions(
        bundle=active, headless=True, json=True, inbox=inbox, model_state=state,
        shadow_frames=300, promote_agreement=0.5, promote_latency=100.0,
    )  # fmt: skip

    def act(source, logs, out):
        assert _wait(lambda: len(out.rows) >= 50)
        na, ta = len(out.rows), time.monotonic()
        time.sleep(1.5)
        alone = (len(out.rows) - na) / (time.monotonic() - ta)
        _drop(int8_bundle, inbox, "new")
        assert _wait(lambda: any("in shadow" in m for m in logs), 30), logs
        n0, t0 = len(out.rows), time.monotonic()
        assert _wait(lambda: any("model: promoted" in m for m in logs)), logs
        n1, t1 = len(out.rows), time.monotonic()
        assert _wait(lambda: any("model: running" in m for m in logs)), logs
        n = len(out.rows)
        assert _wait(lambda: len(out.rows) >= n + 50)
        shadow = (n1 - n0) / (t1 - t0)  # measured, never asserted (a shared CPU)
        print(f"\nactive FPS alone {alone:.1f}, during shadow {shadow:.1f} ({shadow / alone:.2f})")

    summary, _logs, rows, times = _run_with(opts, images, act)
    _contiguous(rows)
    names = [r["bundle"] for r in rows]
    first = names.index("insects")  # the int8 bundle's first record
    assert set(names[:first]) == {"insects-v1"} and set(names[first:]) == {"insects"}
    gaps = [b - a for a, b in itertools.pairwise(times)]
    swap_gap = max(gaps[max(0, first - 3) : first + 3])
    median = sorted(gaps)[len(gaps) // 2]
    print(f"longest gap at the swap {swap_gap * 1e3:.1f} ms, median {median * 1e3:.1f} ms")
    s = _state(state)
    assert s["why"].startswith("promoted") and s["candidate"] is None, s
    assert s["previous"]["path"] == str(active.resolve())
    assert Path(s["active"]["path"]).parent == state.parent / "bundles"
    assert summary.swaps == 1 and summary.shadow["state"] == "promoted"
    assert summary.shadow["frames"] == 300 and summary.to_dict()["shadow"]["agreement"] >= 0.5
    assert sorted(p.name for p in (inbox / "new").iterdir()) == sorted(
        p.name for p in int8_bundle.iterdir()
    )  # the inbox is read, never written


def _post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/deploy", json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def test_deploy_refuses_a_weak_or_foreign_candidate_promotes_and_rolls_back(
    active, weak, int8_bundle, images, tmp_path
):
    state, port = tmp_path / "state.json", free_port()
    reversed_labels = shutil.copytree(int8_bundle, tmp_path / "reversed")
    manifest = json.loads((reversed_labels / "manifest.json").read_text())
    manifest["labels"] = manifest["labels"][::-1]
    (reversed_labels / "manifest.json").write_text(json.dumps(manifest))
    opts = LoopOptions(
        bundle=active, headless=True, json=True, model_state=state, http=str(port),
        shadow_frames=40, promote_latency=100.0,  # the operator's commands alone
    )  # fmt: skip
    seen = {}

    def act(source, logs, out):
        assert _wait(lambda: len(out.rows) >= 20)
        assert _post(port, {"path": "relative/x"})[0] == 400
        assert _post(port, {"action": "dance"})[0] == 400
        assert _post(port, {"path": str(weak)})[0] == 202
        assert _wait(lambda: "refused: agreement" in _state(state).get("why", "")), logs
        assert _state(state)["candidate"] is None
        seen["metrics"] = _get(port, "/metrics")
        seen["latest"] = json.loads(_get(port, "/latest"))
        assert _post(port, {"path": str(reversed_labels)})[0] == 202
        assert _wait(lambda: "differ from the active" in _state(state).get("why", "")), logs
        assert _post(port, {"path": str(int8_bundle)})[0] == 202
        assert _wait(lambda: _state(state).get("candidate") is not None), logs
        _act_and_run_on(port, "promote", 1, logs, out)
        seen["promoted"] = _state(state)
        _act_and_run_on(port, "rollback", 2, logs, out)

    summary, logs, rows, _ = _run_with(opts, images, act)
    _contiguous(rows)
    refusals = [m for m in logs if "refused" in m]
    assert len(refusals) == 2 and all("keeps running" in m for m in refusals), refusals
    assert "edgecls_shadow_agreement" in seen["metrics"] and seen["latest"]["shadow"]["frames"]
    assert seen["latest"]["artifact"] == "model_float32.tflite"  # untouched by the refusals
    promoted = seen["promoted"]
    assert promoted["why"].startswith("promoted") and "by POST /deploy" in promoted["why"]
    s = _state(state)
    assert s["why"].startswith("rolled back") and s["active"]["path"] == str(active.resolve())
    assert s["previous"] == promoted["active"] and Path(s["previous"]["path"]).is_dir()
    names = [r["bundle"] for r in rows]
    changes = [a for a, b in itertools.pairwise(names) if a != b]
    assert changes == ["insects-v1", "insects"] and names[-1] == "insects-v1"
    assert summary.swaps == 2


def test_a_promoted_model_over_its_latency_budget_on_the_line_is_rolled_back(
    active, int8_bundle, images, tmp_path, monkeypatch
):
    """Promoted by an operator, the model then runs 30 ms a frame on the line (a throttled CPU,
    a delegate gone), where its shadow measured it fast: over its budget (1.5 x the slower of the
    two in the shadow, + 1 ms) for its first frames, it is rolled back at once, between two
    frames, and the state says why."""
    from edgecls.runtime import loop
    from edgecls.runtime.models import manager as models

    managers, original = [], loop._models
    monkeypatch.setattr(loop, "_models", lambda *a: managers.append(original(*a)) or managers[-1])
    state, port = tmp_path / "state.json", free_port()
    opts = LoopOptions(
        bundle=active, headless=True, json=True, model_state=state, http=str(port),
        shadow_frames=30,
    )  # fmt: skip

    def act(source, logs, out):
        assert _wait(lambda: len(out.rows) >= 20)
        assert _post(port, {"path": str(int8_bundle)})[0] == 202
        assert _wait(lambda: managers[0].candidate is not None and managers[0].stats.frames >= 5)
        predictor = managers[0].candidate.choice.predictor
        fast = predictor.predict

        def on_the_line(x):  # slow in the loop only: the shadow measured it fast
            if threading.current_thread().name != "models":
                time.sleep(0.03)
            return fast(x)

        predictor.predict = on_the_line
        _act_and_run_on(port, "promote", 2, logs, out)

    summary, logs, rows, _ = _run_with(opts, images, act)
    _contiguous(rows)
    s = _state(state)
    assert s["why"].startswith("rolled back") and "latency budget" in s["why"], s["why"]
    assert s["active"]["path"] == str(active.resolve())
    swaps = [int(m.rpartition("from frame ")[2]) for m in logs if m.startswith("model: running")]
    promoted, back = swaps  # the window of 30 frames, then the time to load the previous model
    assert 30 <= back - promoted < 30 + 60, swaps
    assert all(r["latency_ms"] >= 25 for r in rows[promoted:back]), swaps
    assert rows[-1]["latency_ms"] < 25 and summary.swaps == 2
    assert isinstance(managers[0], models.ModelManager)


def test_a_tampered_or_unsigned_candidate_is_refused_while_the_line_runs(
    active, int8_bundle, images, tmp_path
):
    from test_signing import _keys

    private, public = _keys(tmp_path, "line")
    signed_active = shutil.copytree(active, tmp_path / "active")
    for bundle in (signed_active, shutil.copytree(int8_bundle, tmp_path / "good")):
        result = CliRunner().invoke(app, ["sign", str(bundle), "--key", str(private)])
        assert result.exit_code == 0, result.output
    inbox, state = tmp_path / "inbox", tmp_path / "state.json"
    inbox.mkdir()
    opts = LoopOptions(
        bundle=signed_active, headless=True, json=True, inbox=inbox, model_state=state,
        trust=public, shadow_frames=10_000,
    )  # fmt: skip

    def act(source, logs, out):
        assert _wait(lambda: len(out.rows) >= 20)
        _drop(int8_bundle, inbox, "unsigned")
        assert _wait(lambda: "unsigned" in _state(state).get("why", "")), logs
        flipped = shutil.copytree(tmp_path / "good", tmp_path / "flipped")
        data = bytearray((flipped / "labels.txt").read_bytes())
        data[0] ^= 1
        (flipped / "labels.txt").write_bytes(bytes(data))
        _drop(flipped, inbox, "flipped")
        assert _wait(lambda: "changed since it was signed" in _state(state).get("why", "")), logs
        _drop(tmp_path / "good", inbox, "good")
        assert _wait(lambda: _state(state).get("candidate") is not None), logs
        n = len(out.rows)
        assert _wait(lambda: len(out.rows) >= n + 20)  # the shadow sees some of them

    summary, logs, rows, _ = _run_with(opts, images, act)
    _contiguous(rows)
    refusals = [m for m in logs if "refused" in m]
    assert len(refusals) == 2 and all("\n" not in m for m in refusals), refusals
    assert {(r["bundle"], r["artifact"]) for r in rows} == {("insects-v1", "model_float32.tflite")}
    assert summary.shadow["state"] == "shadow" and summary.shadow["frames"] >= 1


def test_mqtt_deploy_takes_a_candidate_and_an_operators_promote(
    active, int8_bundle, images, tmp_path
):
    from brokers import Mosquitto, Subscriber

    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker, "line/1/status")
    shadows = Subscriber(broker, "line/1/shadow", client_id="dashboard")
    state = tmp_path / "state.json"
    opts = LoopOptions(
        bundle=active, headless=True, json=True, model_state=state, shadow_frames=10_000,
        mqtt=f"{broker.url}/line/1",
    )  # fmt: skip

    def act(source, logs, out):
        assert _wait(lambda: any("mqtt: connected" in m for m in logs), 20), logs
        sub.client.publish("line/1/deploy", json.dumps({"path": str(int8_bundle)}), 1)
        assert _wait(lambda: _state(state).get("candidate") is not None), logs
        assert shadows.wait_for(lambda s: any(m["state"] == "shadow" for m in s.on("/shadow")))
        sub.client.publish("line/1/deploy", "not json", 1)
        sub.client.publish("line/1/deploy", json.dumps({"action": "promote"}), 1)
        assert _wait(lambda: any("model: running" in m for m in logs)), logs

    try:
        summary, logs, rows, _ = _run_with(opts, images, act)
        assert shadows.wait_for(lambda s: s.on("/shadow")[-1]["state"] == "promoted")
    finally:
        sub.close()
        shadows.close()
        broker.stop()
    _contiguous(rows)
    during = next(m for m in shadows.on("/shadow") if m["state"] == "shadow")
    assert {"agreement", "frames", "labels"} <= set(during), during  # the dashboard's figures
    assert any("mqtt deploy refused" in m for m in logs)
    assert _state(state)["why"].startswith("promoted") and "by mqtt deploy" in _state(state)["why"]
    assert summary.swaps == 1


def _board(active: Path, cam: str, state: Path, *extra: str, fault: str | None = None):
    env = {**os.environ, "EDGECLS_CACHE": str(state.parent / "cache")}
    env.pop("EDGECLS_FAULT_AT", None)
    if fault:
        env["EDGECLS_FAULT_AT"] = fault
    args = [sys.executable, "-m", "edgecls", "run", str(active), "--source", cam, "--headless",
            "--json", "--model-state", str(state), *extra]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


@pytest.mark.parametrize("fault", ["copy", "shadow", "swap"])
def test_sigkill_at_each_step_restarts_into_a_whole_approved_bundle(
    fault, active, int8_bundle, images, tmp_path
):
    inbox, state = tmp_path / "inbox", tmp_path / "state" / "model-state.json"
    inbox.mkdir()
    frames = 10 if fault == "swap" else 10_000
    policy = ["--shadow-frames", str(frames), "--promote-agreement", "0", "--promote-latency",
              "1000"]  # fmt: skip
    with MjpegServer(images[:30], fps=30) as cam:
        board = _board(active, cam.url, state, "--inbox", str(inbox), *policy, fault=fault)
        try:
            assert _wait(lambda: _state(state).get("active") is not None, 60)
            _drop(int8_bundle, inbox, "new")
            board.wait(60)
        finally:
            board.kill()
        err = board.stderr.read().decode()
        assert board.returncode == -signal.SIGKILL, err
        killed = _state(state)  # whole JSON: written atomically
        again = _board(active, cam.url, state, "--max-frames", "5")
        out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    rows = [json.loads(line) for line in out.decode().splitlines()]
    s = _state(state)
    want = int8_bundle if fault == "swap" else active
    assert s["active"]["name"] and s["candidate"] is None, s
    assert rows and all(r["artifact"] in {a.name for a in want.iterdir()} for r in rows)
    running = Path(s["active"]["path"])
    assert (running / "manifest.json").is_file()
    if fault == "swap":
        assert killed["why"].startswith("promoted") and running.parent.name == "bundles"
    else:
        assert running == active.resolve()
    if fault == "shadow":
        assert killed["candidate"] is not None and "dropped" in s["why"]
    assert not list((state.parent / "bundles").glob(".*partial*"))  # a killed copy: swept


def test_the_live_view_shows_a_candidate_in_shadow_and_only_then():
    import numpy as np

    from edgecls.runtime.records import Identity, Record
    from edgecls.runtime.sinks.overlay import draw

    frame = np.zeros((240, 320, 3), np.uint8)
    ident = Identity("insects", "model.tflite", "0" * 64, ("a", "b"))
    record = Record(0, 0.0, "a", "a", 0.9, (0.9, 0.1), 1.0, "cam", ident, image=frame)
    shadow = {"bundle": "insects-0123", "state": "shadow", "agreement": 0.97, "frames": 120}
    plain = draw(record, frozenset(), 10.0, None)
    shown = draw(record, frozenset(), 10.0, None, shadow=shadow)
    assert (shown != plain).any()  # a line more
    after = draw(record, frozenset(), 10.0, None, shadow={**shadow, "state": "promoted"})
    assert (after == plain).all()
