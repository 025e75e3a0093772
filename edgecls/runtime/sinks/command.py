"""`--on-trigger CMD`: run a program on each decision, for anything GPIO and MQTT do not reach
(a relay board's CLI, a PLC tool, a siren). No shell: the command is split like a shell would,
but not interpreted (write `sh -c '...'` to ask for one). The decision arrives as JSON on stdin
and in EDGECLS_* variables; one command runs at a time and is killed after its timeout, so a
hanging program costs queued decisions (counted), never the loop."""

from __future__ import annotations

import json
import os
import subprocess

from edgecls.errors import EdgeclsError
from edgecls.runtime.records import Decision
from edgecls.runtime.sinks import SINKS, SinkContext


class CommandSink:
    name = "on-trigger"
    needs = frozenset()

    def __init__(self, config):
        self.config = config.on_trigger
        self.context: SinkContext | None = None

    def open(self, context: SinkContext) -> None:
        import shutil

        program = self.config.command[0]
        if shutil.which(program) is None:
            raise EdgeclsError(f"--on-trigger: {program}: no such program (or not executable)")
        self.context = context

    def handle(self, event) -> None:
        if not isinstance(event, Decision):
            return
        env = {
            **os.environ,
            "EDGECLS_LABEL": event.label,
            "EDGECLS_FRAME": str(event.frame),
            "EDGECLS_TIME": f"{event.time:.3f}",
            "EDGECLS_SOURCE": event.source,
        }
        try:
            proc = subprocess.run(
                self.config.command,
                input=json.dumps(event.to_dict()).encode(),
                env=env,
                timeout=self.config.timeout,
                capture_output=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{self.config.command[0]} ran past {self.config.timeout:g} s and was killed"
            ) from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(
                f"{self.config.command[0]} exited {proc.returncode}"
                + (f": {tail[0][:200]}" if tail else "")
            )

    def close(self) -> None:
        pass


@SINKS.register("on-trigger")
def make(config):
    return CommandSink(config) if config.on_trigger else None
