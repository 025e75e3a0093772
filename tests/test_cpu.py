"""The CPU's integer kernels (issue 33): read from cpuinfo as the kernel writes it on the CPUs a
line meets, named by `edgecls doctor` and in every ONNX parity record, and the int8 ONNX types
whose kernels saturate only where they do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecls.bundle.cpu import cpu_kernels, onnx_int8_caveat, this_cpu
from edgecls.cli import app

pytestmark = pytest.mark.int8

# The lines that matter, as Linux writes them (other lines and flags trimmed).
CPUINFO = {
    "epyc-avx2": (
        "x86_64",
        "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
        "flags\t\t: fpu sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni\n",
    ),
    "skylake-x": (
        "x86_64",
        "processor\t: 0\nflags\t\t: sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw\n",
    ),
    "icelake": (
        "x86_64",
        "processor\t: 0\nflags\t\t: avx avx2 avx512f avx512bw avx512_vnni avx512_vbmi2\n"
        "processor\t: 1\nflags\t\t: avx avx2 avx512f avx512bw avx512_vnni avx512_vbmi2\n",
    ),
    "alderlake": ("x86_64", "processor\t: 0\nflags\t\t: avx avx2 avx_vnni sha_ni\n"),
    "pi4": (
        "aarch64",
        "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n",
    ),
    "pi5": (
        "aarch64",
        "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
        "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n",
    ),
}


def _cpu(name: str, tmp_path: Path):
    architecture, text = CPUINFO[name]
    path = tmp_path / f"{name}.cpuinfo"
    path.write_text(text)
    return cpu_kernels(path, architecture)


@pytest.mark.parametrize(
    "name, features, saturating",
    [
        ("epyc-avx2", ("avx2",), ("u8s8", "s8s8")),
        ("skylake-x", ("avx2", "avx512f", "avx512bw"), ("u8s8", "s8s8")),
        ("icelake", ("avx2", "avx512f", "avx512bw", "avx512_vnni"), ()),
        ("alderlake", ("avx2", "avx_vnni"), ()),
        ("pi4", ("asimd",), ()),
        ("pi5", ("asimd", "asimddp"), ()),
    ],
)
def test_features_and_saturating_types_per_cpu(name, features, saturating, tmp_path):
    cpu = _cpu(name, tmp_path)
    assert cpu.features == features and cpu.saturating_onnx_int8 == saturating
    summary = cpu.summary()
    assert summary.startswith(f"{cpu.architecture}: {', '.join(features)}")
    assert ("saturate" in summary) == bool(saturating) and ("no VNNI" in summary) == bool(
        saturating
    )
    caveat = onnx_int8_caveat("s8s8", cpu)
    assert ("VNNI CPU the plain one may pass" in caveat) == bool(saturating)
    assert onnx_int8_caveat("u8u8", cpu) == ""  # u8u8 is exact everywhere


def test_an_unreadable_cpuinfo_is_the_cautious_answer(tmp_path):
    cpu = cpu_kernels(tmp_path / "missing", "x86_64")
    assert cpu.features == () and cpu.saturating_onnx_int8 == ("u8s8", "s8s8")
    assert cpu.summary().startswith("x86_64: no SIMD int8 features, no VNNI")


def test_doctor_names_the_cpus_int8_kernels():
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cpu_int8"] == this_cpu().summary()
    result = CliRunner().invoke(app, ["doctor"])
    assert f"cpu_int8: {this_cpu().summary()}" in result.output


def test_an_onnx_parity_record_names_the_cpu_it_ran_on(int8_bundle):
    from edgecls.bundle.backends import RuntimeOptions, load_predictor

    fused = load_predictor(int8_bundle / "model_int8.onnx")
    assert fused.description.endswith(f"CPU int8: {this_cpu().int8}")
    unfused = load_predictor(int8_bundle / "model_int8.onnx", RuntimeOptions(fused_int8=False))
    assert unfused.description.endswith("int8 unfused")
