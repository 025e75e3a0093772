"""The CPU's integer kernels: the same int8 ONNX artifact computes other numbers on an x86 CPU
without VNNI (ONNX Runtime multiplies u8 by s8 with pmaddubsw, whose 16-bit pair sums saturate)
than on one with VNNI or on ARM, so a parity figure names the CPU it was measured on."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

# The /proc/cpuinfo flags that decide which integer kernels run, by architecture family.
X86_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve")
VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# ONNX int8 types (export.context.ONNX_INT8) whose x86 kernels multiply u8 by s8 (s8 activations
# are shifted to u8 first): exact with VNNI, saturating in 16 bits without it.
U8_BY_S8 = ("u8s8", "s8s8")


@dataclass(frozen=True)
class CpuKernels:
    architecture: str
    features: tuple[str, ...]  # those of X86_FEATURES / ARM_FEATURES this CPU has

    @property
    def x86(self) -> bool:
        return self.architecture in ("x86_64", "AMD64", "i686", "i386")

    @property
    def saturating_onnx_int8(self) -> tuple[str, ...]:
        """The ONNX int8 types whose ONNX Runtime kernels can saturate here (none on ARM)."""
        return U8_BY_S8 if self.x86 and not VNNI & set(self.features) else ()

    @property
    def int8(self) -> str:
        """What a parity record says of the CPU that measured it, e.g. `avx2, no VNNI`."""
        has = ", ".join(self.features) or "no SIMD int8 features"
        return f"{has}, no VNNI" if self.saturating_onnx_int8 else has

    def summary(self) -> str:
        if self.saturating_onnx_int8:
            effect = "ONNX Runtime's u8s8 and s8s8 int8 kernels saturate here; u8u8 is exact"
        else:
            effect = "ONNX Runtime's int8 kernels are exact here"
        return f"{self.architecture}: {self.int8}; {effect}"


@functools.cache
def this_cpu() -> CpuKernels:
    return cpu_kernels()


def cpu_kernels(
    cpuinfo: Path = Path("/proc/cpuinfo"), architecture: str | None = None
) -> CpuKernels:
    """The int8-relevant features of this CPU, read from the kernel's cpuinfo (x86 `flags`, ARM
    `Features`); an unreadable file (not Linux) gives none, which reads as the cautious answer."""
    architecture = architecture or platform.machine()
    try:
        text = cpuinfo.read_text(errors="ignore")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    known = X86_FEATURES + ARM_FEATURES
    return CpuKernels(architecture, tuple(f for f in known if f in flags))


def onnx_int8_caveat(kind: str, cpu: CpuKernels | None = None) -> str:
    """Why an int8 ONNX of `kind` that failed its gate here may pass on the board; '' where
    this CPU's kernels are exact, so a failure here is the model's."""
    cpu = cpu or this_cpu()
    if kind not in cpu.saturating_onnx_int8:
        return ""
    return (
        f"this CPU ({cpu.int8}) runs {kind} int8 in kernels that saturate; on an ARM board or a "
        "VNNI CPU the plain one may pass: `edgecls parity` there decides"
    )
