"""`edgecls doctor`: what this machine can run, without importing TensorFlow."""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

from edgecls.runtime.delegates import DELEGATES


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


def doctor() -> dict:
    import cv2
    import numpy as np

    providers = None
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        providers = ort.get_available_providers()
    delegates = {
        name: (_loadable(spec.libraries) if spec.libraries else "built in")
        for name, spec in DELEGATES.items()
    }
    cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "cores": os.cpu_count(),
        "board": board(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "runtimes": {
            "ai-edge-litert": _version("ai-edge-litert"),
            "tflite-runtime": _version("tflite-runtime"),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "tensorflow": _version("tensorflow"),
        },
        "onnxruntime_providers": providers,
        "delegates": delegates,
        "cameras": cameras,
        "gstreamer": "GStreamer: YES" in " ".join(cv2.getBuildInformation().split()),
    }
