"""A quiet, conventional command line: --version, --quiet/--verbose, no native chatter, shell
completion, and one line (not a traceback) where a device-only install lacks a module."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from edgecls import logs
from edgecls.cli import app
from edgecls.cli.common import command

CHATTER = ("absl", "cuInit", "XNNPACK delegate", "fully_quantize", "I0000", "E0000")


def _python(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    # As a user's shell would run it: no log level exported (conftest exports one for pytest).
    env = {k: v for k, v in os.environ.items() if k not in logs.QUIET_ENV}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"edgecls {importlib.metadata.version('edgecls')}"
    out = subprocess.run(
        [sys.executable, "-m", "edgecls", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("edgecls ") and out.stderr == ""


def test_quiet_hides_tables_but_not_json_and_is_reset():
    runner = CliRunner()
    quiet = runner.invoke(app, ["--quiet", "doctor"])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    as_json = runner.invoke(app, ["-q", "doctor", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["architecture"]
    loud = runner.invoke(app, ["doctor"])  # the next invocation is not quiet any more
    assert loud.exit_code == 0 and "architecture" in loud.stdout


def test_quiet_and_verbose_together_is_one_error_line():
    result = CliRunner().invoke(app, ["--quiet", "--verbose", "doctor"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--quiet" in lines[0]


def test_shell_completion_is_available():
    out = subprocess.run(
        [sys.executable, "-m", "edgecls", "--show-completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "complete" in out and "EDGECLS_COMPLETE" in out.upper()


@pytest.mark.parametrize(
    ("module", "extra"), [("tensorflow", "train"), ("matplotlib", "train"), ("paho", "device")]
)
def test_missing_module_is_one_line_naming_the_extra(module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ModuleNotFoundError
    probe = typer.Typer()

    @command(probe, name="needs")
    def needs():
        __import__(module)

    @command(probe, name="other")
    def other():
        pass

    result = CliRunner().invoke(probe, ["needs"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert module in lines[0] and f"pip install 'edgecls[{extra}]'" in lines[0]


def test_unrelated_missing_module_is_not_disguised(monkeypatch):
    monkeypatch.setitem(sys.modules, "no_such_edgecls_dependency", None)
    probe = typer.Typer()

    @command(probe, name="needs")
    def needs():
        import no_such_edgecls_dependency  # noqa: F401

    @command(probe, name="other")
    def other():
        pass

    result = CliRunner().invoke(probe, ["needs"])
    assert isinstance(result.exception, ModuleNotFoundError)


DEVICE_ONLY = """
import importlib.abc, sys
BLOCKED = {"tensorflow", "keras", "tf2onnx", "onnx", "shap", "matplotlib"}

class DeviceOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, DeviceOnly())
from edgecls.cli import app
app(sys.argv[1:], prog_name="edgecls")
"""


@pytest.mark.parametrize("command_name", ["train", "predict", "explain"])
def test_workstation_commands_on_a_device_only_install(command_name, casting_data, tmp_path):
    (tmp_path / "model.keras").write_bytes(b"a Keras model: never read, keras is missing")
    (tmp_path / "labels.txt").write_text("def\nok\n")
    image = str(next((casting_data / "test" / "def").iterdir()))
    args = {
        "train": ["train", "--data", str(casting_data), "--epochs", "1", "--out", "run"],
        "predict": ["predict", "model.keras", image],
        "explain": ["explain", "model.keras", "--images", image],
    }[command_name]
    result = _python(DEVICE_ONLY, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "pip install 'edgecls[train]'" in lines[0]
    assert "Traceback" not in result.stderr


NATIVE = """
import ctypes, os, sys
from edgecls import logs
libc = ctypes.CDLL(None)
logs.configure(int(sys.argv[1]))
with logs.native_stderr_silenced():
    libc.dprintf(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"fully_quantize: 0, inference_type: 6\\n")
os.write(2, b"after the block\\n")
try:
    with logs.native_stderr_silenced():
        libc.dprintf(2, b"the converter's reason\\n")
        raise RuntimeError("conversion failed")
except RuntimeError:
    os.write(2, b"caught\\n")
"""


def test_native_stderr_is_silenced_unless_verbose():
    quiet = _python(NATIVE, str(logs.NORMAL))
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "fully_quantize" not in quiet.stderr
    # fd 2 is back after the block, and a failing block shows what it captured
    assert quiet.stderr.splitlines() == ["after the block", "the converter's reason", "caught"]
    loud = _python(NATIVE, str(logs.VERBOSE))
    assert "XNNPACK delegate" in loud.stderr and "fully_quantize" in loud.stderr


def test_quiet_import_hook_silences_a_chatty_package(tmp_path):
    pkg = tmp_path / "chattypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import ctypes\nctypes.CDLL(None).dprintf(2, b'WARNING: All log messages before "
        "absl::InitializeLog() is called are written to STDERR\\n')\nVALUE = 7\n"
    )
    code = """
    import os, sys
    from edgecls import logs
    logs.configure(int(sys.argv[1]))
    logs.install_quiet_imports(("chattypkg",))
    import chattypkg
    assert chattypkg.VALUE == 7 and chattypkg.__spec__.name == "chattypkg"
    os.write(2, b"imported\\n")
    """
    quiet = _python(code, str(logs.NORMAL), cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "imported\n", quiet.stderr
    loud = _python(code, str(logs.VERBOSE), cwd=tmp_path)
    assert loud.returncode == 0 and "absl::InitializeLog" in loud.stderr


@pytest.mark.slow
def test_tensorflow_import_prints_nothing():
    code = """
    import os
    from edgecls import logs
    logs.configure(logs.NORMAL)
    import tensorflow as tf
    tf.constant([1.0]) + 1.0  # the first op probes CUDA (cuInit) on a machine without a GPU
    os.write(2, b"done\\n")
    """
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert not [c for c in CHATTER if c in result.stderr], result.stderr
    assert result.stderr.endswith("done\n")


THREADS = """
import os, threading
from edgecls import logs
inside, done = threading.Event(), threading.Event()

def other():
    with logs.native_stderr_silenced():
        os.write(2, b"other thread chatter\\n")
        inside.set()
        done.wait(30)

t = threading.Thread(target=other)
t.start()
inside.wait(30)
with logs.native_stderr_silenced():  # another thread holds fd 2: runs inside it, never waits
    os.write(2, b"main thread chatter\\n")
print("main thread went on", flush=True)
done.set()
t.join()
with logs.native_stderr_silenced():
    with logs.native_stderr_silenced():  # nested in one thread
        os.write(2, b"nested chatter\\n")
    os.write(2, b"outer chatter\\n")
os.write(2, b"end\\n")
"""


def test_native_silencer_never_waits_for_another_thread_and_nests():
    result = _python(THREADS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "main thread went on\n"
    assert result.stderr.splitlines() == ["end"]  # fd 2 restored once, in order
