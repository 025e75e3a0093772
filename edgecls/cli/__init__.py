"""The `edgecls` command: parse, call one library function, print. No TensorFlow at import.

One module per group of commands; importing them registers their commands on `app`, in the
order of the flow (help lists them so)."""

import importlib
import os
import sys
import threading

from edgecls.cli.common import app

for _group in ("data", "train", "evaluate", "export", "device", "explain"):
    importlib.import_module(f"edgecls.cli.{_group}")


def main() -> None:
    """The console script. A capture thread can still sit inside native code (a stream that
    stalled and is past its owner's join); letting the interpreter tear such threads down
    aborts the process ("FATAL: exception not rethrown"), so after the command has flushed and
    closed its outputs, a process with threads left ends without that teardown."""
    try:
        app(prog_name="edgecls")
        code = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)


__all__ = ["app", "main"]
