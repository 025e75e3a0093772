"""A fleet on 127.0.0.1: board processes (`edgecls run --group`) with a real mosquitto and bundles
served by `edgecls serve`. A tampered bundle is refused by every board (and the others do not
follow a canary that refused it), a canary rollout completes on all, the canary first, a board
started later takes the retained rollout, and `deploy --status` shows the fleet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import pytest
from mjpeg_server import MjpegServer, free_port
from test_model_swap import _export, _wait
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.fleet import Policy, Rollout
from edgecls.serve import BundleServer

PREFIX = "plant"


def _sign(bundle: Path, private: Path) -> Path:
    result = CliRunner().invoke(app, ["sign", str(bundle), "--key", str(private)])
    assert result.exit_code == 0, result.output
    return bundle


class States:
    """Every board state message (PREFIX/boards/+/model), in the order they arrived."""

    def __init__(self, broker):
        from brokers import Subscriber

        self.sub = Subscriber(broker, f"{PREFIX}/boards/+/model", client_id="fleet-test")

    def of(self, board: str) -> list[dict]:
        return [p for p in self.sub.on(f"/{board}/model") if isinstance(p, dict)]

    def last(self, board: str) -> dict:
        states = self.of(board)
        return states[-1] if states else {}


class Fleet:
    """Board processes of group line1, each with its state folder, stderr kept for the asserts."""

    def __init__(self, tmp: Path, active: Path, cam: str, broker, trust: Path):
        self.tmp, self.active, self.cam, self.broker, self.trust = tmp, active, cam, broker, trust
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, board: str, fault: str | None = None) -> None:
        folder = self.tmp / board
        folder.mkdir(exist_ok=True)
        env = {**os.environ, "EDGECLS_CACHE": str(folder / "cache")}
        env.pop("EDGECLS_FAULT_AT", None)
        if fault:
            env["EDGECLS_FAULT_AT"] = fault
        args = [sys.executable, "-m", "edgecls", "run", str(self.active), "--source", self.cam,
                "--headless", "--mqtt", f"{self.broker.url}/{PREFIX}", "--group", "line1",
                "--board-id", board, "--model-state", str(folder / "model-state.json"),
                "--trust", str(self.trust), "--backend", "litert"]  # fmt: skip
        with open(folder / "stderr.txt", "ab") as err:
            self.procs[board] = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=err, env=env
            )

    def state_file(self, board: str) -> dict:
        path = self.tmp / board / "model-state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def logs(self, board: str) -> str:
        return (self.tmp / board / "stderr.txt").read_text()

    def stop(self) -> dict[str, int]:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {}
        for board, proc in self.procs.items():
            try:
                codes[board] = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[board] = proc.wait()
        return codes


@pytest.fixture(scope="module")
def bundles(insects_run, int8_bundle, tmp_path_factory) -> dict[str, Path]:
    """Signed: the active float32 bundle, the int8 candidate served as `good`, and `tampered`,
    the candidate with a byte of labels.txt flipped after signing (same manifest)."""
    from test_signing import _keys

    tmp = tmp_path_factory.mktemp("fleet-bundles")
    private, public = _keys(tmp, "fleet")
    active = _sign(_export(insects_run, tmp / "active"), private)
    served = tmp / "served"
    good = _sign(shutil.copytree(int8_bundle, served / "good"), private)
    tampered = shutil.copytree(good, served / "tampered")
    data = bytearray((tampered / "labels.txt").read_bytes())
    data[0] ^= 1
    (tampered / "labels.txt").write_bytes(bytes(data))
    return {"active": active, "good": good, "tampered": tampered, "served": served,
            "public": public}  # fmt: skip


def _deploy(broker, bundle: Path, url: str, *extra: str) -> str:
    args = ["deploy", str(bundle), "--mqtt", f"{broker.url}/{PREFIX}", "--group", "line1",
            "--url", url, "--json", *extra]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.splitlines()[-1])["rollout"]


def _serve(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [sys.executable, "-m", "edgecls", "serve", str(folder), "--port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert _wait(lambda: _reachable(port), 30), proc.stdout.read1(4096) if proc.poll() else ""
    return proc, port


def _reachable(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bundles/", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_a_fleet_refuses_a_tampered_bundle_follows_its_canary_and_takes_a_late_rollout(
    bundles, insects_data, tmp_path
):
    from brokers import Mosquitto

    images = [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:20]]
    broker = Mosquitto(tmp_path / "broker").start()
    server, port = _serve(bundles["served"])
    states = States(broker)
    cam = MjpegServer(images, fps=8).start()
    fleet = Fleet(tmp_path, bundles["active"], cam.url, broker, bundles["public"])
    base = f"http://127.0.0.1:{port}/bundles"
    boards = ("b1", "b2", "b3")
    try:
        for board in boards:
            fleet.start(board)
        assert _wait(lambda: all(states.of(b) for b in boards), 90), [fleet.logs(b) for b in boards]
        _refused_everywhere(broker, fleet, states, base, bundles)
        good = _rolled_out_canary_first(broker, fleet, states, base, bundles)
        fleet.start("b4")  # after the rollout: the broker holds it, retained
        assert _wait(lambda: _runs(states.last("b4"), good), 120), fleet.logs("b4")
        result = CliRunner().invoke(
            app, ["deploy", "--status", "--mqtt", f"{broker.url}/{PREFIX}", "--group", "line1"],
            env={"COLUMNS": "200"},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        for board in (*boards, "b4"):
            assert board in result.output, result.output
        assert result.output.count("promoted") >= 3 and "online" in result.output, result.output
    finally:
        codes = fleet.stop()
        cam.close()
        states.sub.close()
        server.terminate()
        server.wait(10)
        broker.stop()
    assert set(codes.values()) == {0}, codes
    for board in (*boards, "b4"):
        assert fleet.state_file(board)["active"]["manifest_sha256"] == good, board
        assert not (tmp_path / board / "fetch").exists() or not any(
            (tmp_path / board / "fetch").iterdir()
        )  # staging emptied once the intake had its copy


def _runs(state: dict, sha: str) -> bool:
    return (state.get("active") or {}).get("manifest_sha256") == sha


def _refused_everywhere(broker, fleet, states, base, bundles) -> None:
    """Without a canary every board fetches the tampered bundle, and every one refuses it (the
    signature under --trust); with a canary, the canary refuses and no other board follows."""
    rid = _deploy(broker, bundles["tampered"], f"{base}/tampered")
    boards = ("b1", "b2", "b3")

    def refused(board: str, rollout: str) -> bool:
        last = states.last(board)
        return last.get("rollout") == rollout and last.get("state") == "refused"

    assert _wait(lambda: all(refused(b, rid) for b in boards), 120), [
        (states.last(b), fleet.logs(b)[-2000:]) for b in boards
    ]
    for board in boards:
        s = fleet.state_file(board)
        assert "labels.txt changed since it was signed" in s["why"], s
        assert f"rollout:{rid}" in s["decided"] and s["candidate"] is None
        assert _runs({"active": s["active"]}, states.last(board)["active"]["manifest_sha256"])
    rid2 = _deploy(broker, bundles["tampered"], f"{base}/tampered", "--canary", "b1")
    assert _wait(lambda: refused("b1", rid2), 60), fleet.logs("b1")[-2000:]

    def held(board: str) -> bool:
        last = states.last(board)
        return last.get("rollout") == rid2 and "not following" in last.get("why", "")

    assert _wait(lambda: held("b2") and held("b3"), 30), [states.last(b) for b in boards]
    for board in ("b2", "b3"):  # they never fetched it
        assert not any(s.get("state") == "fetching" and s.get("rollout") == rid2
                       for s in states.of(board))  # fmt: skip


def _rolled_out_canary_first(broker, fleet, states, base, bundles) -> str:
    from edgecls.bundle.folder import sha256

    good = sha256(bundles["good"] / "manifest.json")
    policy = "agreement=0.5,latency=1000,frames=15"
    rid = _deploy(broker, bundles["good"], f"{base}/good", "--canary", "b1", "--policy", policy)
    boards = ("b1", "b2", "b3")
    assert _wait(lambda: all(_runs(states.last(b), good) for b in boards), 180), [
        (states.last(b), fleet.logs(b)[-2000:]) for b in boards
    ]
    of_rollout = {b: [s for s in states.of(b) if s.get("rollout") == rid] for b in boards}
    promoted = next(s["time"] for s in of_rollout["b1"] if s["state"] == "promoted")
    for board in ("b2", "b3"):
        fetching = [s["time"] for s in of_rollout[board] if s["state"] == "fetching"]
        assert fetching and min(fetching) >= promoted, of_rollout[board]
        assert any(s["state"] == "promoted" for s in of_rollout[board]), of_rollout[board]
    for board in boards:
        s = fleet.state_file(board)
        assert s["why"].startswith("promoted") and f"rollout:{rid}" in s["decided"], s
        assert s["previous"]["manifest_sha256"] != good
    return good


def test_a_board_killed_while_fetching_resumes_the_rollout_after_a_restart(
    bundles, insects_data, tmp_path
):
    from brokers import Mosquitto

    from edgecls.bundle.folder import sha256

    images = [cv2.imread(str(p)) for p in sorted((insects_data / "test").rglob("*.jpg"))[:10]]
    broker = Mosquitto(tmp_path / "broker").start()
    server, port = _serve(bundles["served"])
    cam = MjpegServer(images, fps=8).start()
    fleet = Fleet(tmp_path, bundles["active"], cam.url, broker, bundles["public"])
    good = sha256(bundles["good"] / "manifest.json")
    try:
        _deploy(broker, bundles["good"], f"http://127.0.0.1:{port}/bundles/good",
                "--policy", "agreement=0.5,latency=1000,frames=10")  # fmt: skip
        fleet.start("k1", fault="fetch")  # SIGKILL at the first bytes fetched
        assert fleet.procs["k1"].wait(90) == -signal.SIGKILL, fleet.logs("k1")
        killed = fleet.state_file("k1")
        assert list((tmp_path / "k1" / "fetch").rglob(".*.partial")), "nothing staged"
        fleet.start("k1")
        assert _wait(lambda: fleet.state_file("k1").get("why", "").startswith("promoted"), 120), (
            fleet.logs("k1")
        )
    finally:
        codes = fleet.stop()
        cam.close()
        server.terminate()
        server.wait(10)
        broker.stop()
    assert codes == {"k1": 0}, codes
    assert killed["active"]["manifest_sha256"] != good and killed["candidate"] is None
    assert fleet.state_file("k1")["active"]["manifest_sha256"] == good


# --- the file server and the messages, without boards ---------------------------------------


@pytest.fixture
def served(int8_bundle, tmp_path):
    root = tmp_path / "bundles"
    shutil.copytree(int8_bundle, root / "insects")
    (tmp_path / "secret.txt").write_text("not served")
    os.symlink(tmp_path / "secret.txt", root / "insects" / "link.txt")
    server = BundleServer(root, "127.0.0.1", 0, token="t0ken")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root / "insects"
    server.shutdown()
    server.server_close()


def _get(url: str, token: str | None = "t0ken", start: int | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if start is not None:
        headers["Range"] = f"bytes={start}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_lists_verifies_resumes_and_keeps_to_its_folder(served):
    from edgecls.bundle.folder import sha256

    base, folder = served
    assert _get(f"{base}/bundles/", token=None)[0] == 401
    assert _get(f"{base}/bundles/", token="wrong")[0] == 401
    assert json.loads(_get(f"{base}/bundles/")[1]) == {"bundles": ["insects"]}
    index = json.loads(_get(f"{base}/bundles/insects/index.json")[1])
    files = {f["file"]: f for f in index["files"]}
    assert "link.txt" not in files and {"manifest.json", "labels.txt"} <= set(files)
    assert files["manifest.json"]["sha256"] == sha256(folder / "manifest.json")
    whole = (folder / "manifest.json").read_bytes()
    assert _get(f"{base}/bundles/insects/manifest.json") == (200, whole)
    assert _get(f"{base}/bundles/insects/manifest.json", start=10) == (206, whole[10:])
    assert _get(f"{base}/bundles/insects/manifest.json", start=len(whole))[0] == 416
    for path in ("insects/link.txt", "insects/../../secret.txt", "insects/%2e%2e/x",
                 "..%2fsecret.txt", "insects/.hidden", "nope/manifest.json"):  # fmt: skip
        assert _get(f"{base}/bundles/{path}")[0] == 404, path


def test_rollout_and_policy_messages_refuse_what_they_do_not_name():
    from edgecls.errors import EdgeclsError

    assert Policy.parse("agreement=0.9,frames=20") == Policy(agreement=0.9, frames=20)
    for bad in ("agreement=2", "speed=1", "frames=x"):
        with pytest.raises(EdgeclsError):
            Policy.parse(bad)
    ok = Rollout("r1", "line1", "insects", "a" * 64, "http://h/bundles/insects", "b1",
                 Policy(agreement=0.9))  # fmt: skip
    assert Rollout.from_dict(json.loads(json.dumps(ok.to_dict()))) == ok
    for change in ({"url": "file:///etc"}, {"canary": "a/b"}, {"group": "+"}, {"bundle": {}}):
        with pytest.raises(EdgeclsError):
            Rollout.from_dict({**ok.to_dict(), **change})
