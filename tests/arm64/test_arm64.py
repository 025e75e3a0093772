"""The device loop and parity on an emulated Raspberry Pi 4 and 5 (aarch64 under qemu-user),
compared with x86 on the same bundle and video. Run with `make test-arm64` (part of `make test`)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compare import compare_frames, compare_parity
from typer.testing import CliRunner

from edgecls.cli import app

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BOARDS = {"pi4": "cortex-a72", "pi5": "cortex-a76"}  # never qemu's default `max` (SME)

pytestmark = pytest.mark.arm64


class Emulator:
    def __init__(self, settings: dict[str, str], home: Path):
        self.settings = settings
        self.home = home

    def edgecls(
        self, board: str, *args: str, timeout: int = 900, codes=(0, 1)
    ) -> subprocess.CompletedProcess:
        root = self.settings[f"ROOT_{board.upper()}"]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "EDGECLS_CACHE": str(self.home),
            "PYTHONPATH": self.settings["PYTHONPATH"],
            "QEMU_CPU": BOARDS[board],
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        cmd = [
            self.settings["QEMU"],
            "-L",
            root,
            f"{root}/usr/bin/python3.11",
            "-m",
            "edgecls",
            *args,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode in codes, f"{board} edgecls {' '.join(args)}:\n{proc.stderr[-3000:]}"
        return proc


def x86(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "edgecls", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> Emulator:
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
    )
    proc = subprocess.run(
        ["bash", str(HERE / "prepare.sh"), str(wheels)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    sys.stderr.write(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return Emulator(settings, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def arm_bundle(int8_bundle) -> Path:
    return int8_bundle


@pytest.fixture(scope="session")
def video(insects_data, tmp_path_factory) -> Path:
    sys.path.insert(0, str(HERE.parent))
    from videos import write_video

    images = [
        p
        for name in ("beetles", "cockroach", "dragonflies")
        for p in sorted((insects_data / "test" / name).glob("*.jpg"))[:4]
    ]
    path = tmp_path_factory.mktemp("video") / "known.mp4"
    write_video(path, images, repeat=2)
    return path


@pytest.fixture(scope="session")
def x86_parity(arm_bundle, insects_data) -> dict:
    return json.loads(
        x86("parity", str(arm_bundle), "--data", str(insects_data / "test"), "--json").stdout
    )


@pytest.mark.parametrize("board", BOARDS)
def test_doctor_reports_aarch64(emulator, board):
    report = json.loads(emulator.edgecls(board, "doctor", "--json").stdout)
    print(
        f"\n[{board}] doctor: architecture {report['architecture']}, cores {report['cores']}, "
        f"runtimes {report['runtimes']}, providers {report['onnxruntime_providers']}"
    )
    assert report["architecture"] == "aarch64"
    assert report["runtimes"]["ai-edge-litert"] and report["runtimes"]["onnxruntime"]
    assert report["runtimes"]["tensorflow"] is None


@pytest.mark.parametrize("board", BOARDS)
def test_loop_labels_agree_with_x86_on_every_frame(emulator, board, arm_bundle, video):
    manifest = json.loads((arm_bundle / "manifest.json").read_text())
    for artifact in (a["file"] for a in manifest["artifacts"]):
        args = (
            "run",
            str(arm_bundle),
            "--source",
            str(video),
            "--headless",
            "--json",
            "--artifact",
            artifact,
            "--allow-failed",  # bits compared, not gates: every artifact runs
        )
        here = [json.loads(line) for line in x86(*args).stdout.splitlines()]
        there = [json.loads(line) for line in emulator.edgecls(board, *args).stdout.splitlines()]
        problems = compare_frames(here, there)
        print(
            f"[{board}] run {artifact}: {len(there)} frames, "
            f"{len(there) - len(problems)}/{len(there)} labels identical to x86"
        )
        assert not problems, problems


@pytest.mark.parametrize("board", BOARDS)
def test_parity_on_arm_matches_x86_and_is_recorded(
    emulator, board, arm_bundle, insects_data, x86_parity, tmp_path
):
    bundle = shutil.copytree(arm_bundle, tmp_path / "bundle")
    arm = json.loads(
        emulator.edgecls(
            board, "parity", str(bundle), "--data", str(insects_data / "test"), "--json", "--record"
        ).stdout
    )
    problems, notes = compare_parity(x86_parity, arm)
    for line in notes + problems:
        print(f"[{board}] parity {line}")
    assert not problems, problems
    recorded = json.loads((bundle / "manifest.json").read_text())["parity"]
    check = recorded["device_checks"][-1]
    print(f"[{board}] manifest: checked_on {recorded['checked_on']}, board {check['board']!r}")
    assert recorded["checked_on"] == [platform.machine(), "aarch64"]
    assert check["architecture"] == "aarch64"
    assert not any(a["failures"] for a in check["artifacts"].values())
    assert check["board"].startswith(f"Raspberry Pi {board[-1]}")
    assert "aarch64" in (bundle / "parity.md").read_text()


def test_a_different_bundle_on_the_arm_side_fails_the_comparison(
    emulator, insects_run, arm_bundle, insects_data, x86_parity, tmp_path
):
    other = tmp_path / "other"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(insects_run),
            "--int8",
            "--format",
            "tflite",
            "--calibration-size",
            "12",
            "--out",
            str(other),
            "--max-drop",
            "100",
            "--min-agreement",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    shutil.copy(arm_bundle / "model_float32.onnx", other)
    shutil.copy(arm_bundle / "model_int8.onnx", other)
    manifest = json.loads((other / "manifest.json").read_text())
    original = json.loads((arm_bundle / "manifest.json").read_text())
    manifest["artifacts"] += [a for a in original["artifacts"] if a["format"] == "onnx"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    arm = json.loads(
        emulator.edgecls(
            "pi4", "parity", str(other), "--data", str(insects_data / "test"), "--json"
        ).stdout
    )
    problems, _ = compare_parity(x86_parity, arm)
    print(f"[pi4] deliberately different bundle: {len(problems)} problem(s): {problems[:1]}")
    assert any("model_int8.tflite" in p and "must be bit-exact" in p for p in problems)


def test_a_bundle_signed_on_the_workstation_is_verified_on_the_pi(emulator, arm_bundle, tmp_path):
    """model-signing and what it pulls in run on aarch64: the board verifies offline."""
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "k.pem"],
        cwd=tmp_path,
        check=True,
    )
    subprocess.run(["openssl", "ec", "-in", "k.pem", "-pubout", "-out", "p.pem"], cwd=tmp_path)
    bundle = shutil.copytree(arm_bundle, tmp_path / "bundle")
    x86("sign", str(bundle), "--key", str(tmp_path / "k.pem"))
    ok = emulator.edgecls("pi5", "verify", str(bundle), "--trust", str(tmp_path / "p.pem"))
    assert ok.returncode == 0 and "every file as signed" in ok.stdout, ok.stderr
    (bundle / "labels.txt").write_text("tampered\n")
    refused = emulator.edgecls(
        "pi5", "verify", str(bundle), "--trust", str(tmp_path / "p.pem"), codes=(2,)
    )
    assert "labels.txt changed since it was signed" in refused.stderr
    site = Path(emulator.settings["PYTHONPATH"].split(":")[-1])
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 2**20
    print(f"\n[pi5] verified a signed bundle; the device's aarch64 packages: {size:.0f} MB")
