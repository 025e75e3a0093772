"""LiteRT delegates by name: one table, one loader; a failure is one warning and CPU fallback."""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError


@dataclass(frozen=True)
class DelegateSpec:
    libraries: tuple[str, ...]  # shared objects tried in order; empty: built into the runtime
    why: str  # shown when none loads
    options: tuple[tuple[str, str], ...] = ()


DELEGATES: dict[str, DelegateSpec] = {
    "xnnpack": DelegateSpec((), "XNNPACK is built into LiteRT and applied by default"),
    "gpu": DelegateSpec(
        ("libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so"),
        "the GPU delegate ships only in Android/iOS builds or a self-built .so on Linux",
    ),
    "nnapi": DelegateSpec(
        ("libnnapi_delegate.so",), "NNAPI exists only on Android (deprecated since Android 15)"
    ),
    "edgetpu": DelegateSpec(
        ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"),
        "install libedgetpu1-std and use a model compiled with edgetpu_compiler",
    ),
}
DELEGATE_CHOICES = ("auto", "none", *DELEGATES)


@dataclass(frozen=True)
class DelegateChoice:
    """What will actually run: the loaded delegate objects and a human description."""

    delegates: tuple
    description: str
    use_default_xnnpack: bool
    warning: str | None = None


def validate_delegate(name: str) -> None:
    """--delegate is a known name or a path to a delegate library."""
    if name in DELEGATE_CHOICES or _is_library_path(name):
        return
    raise EdgeclsError(
        f"--delegate {name!r} is not known: use one of {', '.join(DELEGATE_CHOICES)} "
        "or a path to a delegate .so"
    )


def _is_library_path(name: str) -> bool:
    return name.endswith((".so", ".dylib", ".dll")) or os.sep in name


def choose_delegate(
    name: str, load_delegate, model_path: Path, *, strict: bool = False
) -> DelegateChoice:
    """Resolve --delegate into loaded delegates; never crash on a board that lacks one."""
    validate_delegate(name)
    if name == "none":
        return DelegateChoice((), "none (reference CPU kernels)", use_default_xnnpack=False)
    if name in ("auto", "xnnpack"):
        if name == "auto" and "edgetpu" in model_path.name:
            return choose_delegate("edgetpu", load_delegate, model_path, strict=strict)
        return DelegateChoice((), "XNNPACK (CPU)", use_default_xnnpack=True)
    if name in DELEGATES:
        spec, libraries = DELEGATES[name], DELEGATES[name].libraries
    else:  # a library path
        spec = DelegateSpec((name,), "check the path and that it matches this runtime")
        libraries = (name,)
    native = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
    libraries = tuple(lib for lib in libraries if native in lib) or libraries
    errors = []
    for lib in libraries:
        try:
            # ctypes first: LiteRT's Delegate object is left half-built (and its __del__ raises)
            # when the library itself is missing
            ctypes.CDLL(lib)
            delegate = load_delegate(lib, dict(spec.options))
        except (ValueError, OSError, RuntimeError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(text if lib in text else f"{lib}: {text}")
            continue
        return DelegateChoice((delegate,), f"{name} ({lib})", use_default_xnnpack=True)
    message = f"delegate {name!r} could not be loaded ({'; '.join(errors)}); {spec.why}"
    if strict:
        raise EdgeclsError(message + " (--strict)")
    return DelegateChoice(
        (),
        "XNNPACK (CPU fallback)",
        use_default_xnnpack=True,
        warning=message + "; falling back to CPU",
    )
