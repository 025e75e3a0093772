"""The `edgecls` command: parse, call one library function, print. No TensorFlow at import.

One module per group of commands; importing them registers their commands on `app`, in the
order of the flow (help lists them so)."""

import importlib

from edgecls.cli.common import app

for _group in ("data", "train", "evaluate", "export", "device", "explain"):
    importlib.import_module(f"edgecls.cli.{_group}")


def main() -> None:
    app()


__all__ = ["app", "main"]
