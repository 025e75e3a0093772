"""`edgecls --help` and every command's help must start without TensorFlow."""

import subprocess
import sys

import pytest

COMMANDS = [[], ["train"], ["evaluate"], ["predict"], ["data", "sample"]]

PROBE = """
import sys
from typer.testing import CliRunner
from edgecls.cli import app
result = CliRunner().invoke(app, sys.argv[1:] + ["--help"])
assert result.exit_code == 0, result.output
heavy = sorted(m for m in ("tensorflow", "keras", "shap", "tf2onnx") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "edgecls")
def test_help_does_not_import_tensorflow(args):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY:\n" in out, out


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "edgecls", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("train", "evaluate", "predict", "data"):
        assert name in out


INTERRUPTED_START = """
import sys
class CtrlC:  # the Ctrl-C lands while the command line is being imported
    def find_spec(self, name, path=None, target=None):
        if name == "edgecls.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
from edgecls.__main__ import main
main()
"""


def test_ctrl_c_while_the_command_line_starts_is_a_quiet_130():
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_START], capture_output=True, text=True)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr
