"""`edgecls doctor`: what this machine can run, without importing TensorFlow."""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

from edgecls.bundle.backends import broken
from edgecls.bundle.cpu import this_cpu
from edgecls.bundle.delegates import DELEGATES


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _loadable(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def board() -> str:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(path).read_text(errors="ignore").strip("\0\n ")
        except OSError:
            continue
    if Path("/etc/nv_tegra_release").is_file():
        return "NVIDIA Jetson (L4T)"
    return "unknown (not a Raspberry Pi or Jetson device tree)"


# Runtimes by distribution: the module that must import, and what to report from it.
RUNTIMES = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", ("ai-edge-litert",)),
    "tflite-runtime": ("tflite_runtime.interpreter", ("tflite-runtime",)),
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
}


def probe_import(module: str):
    """(module, "ok") or (None, "not installed") or (None, "broken: Type: reason"), as `run`
    finds a runtime; native complaints printed while importing are kept off the report."""
    from edgecls.bundle.backends import import_runtime
    from edgecls.logs import native_stderr_silenced

    with native_stderr_silenced():
        mod, why = import_runtime(module)
    return mod, why or "ok"


def _runtimes() -> tuple[dict, dict, list[str] | None]:
    versions, status, providers = {}, {}, None
    for name, (module, dists) in RUNTIMES.items():
        versions[name] = next((v for v in map(_version, dists) if v), None)
        if versions[name] is None:
            status[name] = "not installed"
            continue
        mod, status[name] = probe_import(module)
        if mod is not None and name == "onnxruntime":
            try:
                providers = list(mod.get_available_providers())
            except Exception as exc:
                status[name] = broken(exc)
    versions["tensorflow"] = _version("tensorflow")  # listed, never imported on the board
    return versions, status, providers


def _cameras() -> dict:
    """V4L2 devices, libcamera cameras (through Picamera2) and whether OpenCV has GStreamer."""
    picamera2, picamera2_status = probe_import("picamera2")
    report = {
        "cameras": sorted(str(p) for p in Path("/dev").glob("video*")),
        "picamera2": picamera2_status,
        "libcamera_cameras": [],
        "gstreamer": None,
    }
    cv2, cv2_status = probe_import("cv2")
    if cv2 is None:
        report["gstreamer"] = f"unknown: OpenCV {cv2_status}"
        return report
    from edgecls.runtime.sources.cameras import gstreamer_available, libcamera_cameras

    report["gstreamer"] = gstreamer_available()
    if picamera2 is not None:
        report["libcamera_cameras"] = libcamera_cameras()
    return report


def doctor() -> dict:
    versions, status, providers = _runtimes()
    delegates = {
        name: (_loadable(spec.libraries) if spec.libraries else "built in")
        for name, spec in DELEGATES.items()
    }
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "cores": os.cpu_count(),
        "cpu_int8": this_cpu().summary(),
        "board": board(),
        "numpy": _version_of_module("numpy"),
        "opencv": _version_of_module("cv2"),
        "runtimes": versions,
        "runtime_status": status,
        "onnxruntime_providers": providers,
        "delegates": delegates,
        **_cameras(),
    }


def _version_of_module(module: str) -> str | None:
    # Debian's and JetPack's python3-opencv have no pip metadata: ask the module itself.
    mod, status = probe_import(module)
    return getattr(mod, "__version__", None) if mod is not None else status
