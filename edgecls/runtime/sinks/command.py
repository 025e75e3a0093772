"""`--on-trigger CMD`: run a program on each decision or part to reject, for anything GPIO and MQTT
do not reach (a relay board's CLI, a PLC tool, a siren). No shell: the command is split like a
shell would, but not interpreted (write `sh -c '...'` to ask for one). The event arrives as JSON
on stdin and in EDGECLS_* variables; one command runs at a time and is killed after its timeout,
so a hanging program costs queued decisions (counted), never the loop. Each runs in a session of
its own, so a kill reaches what it started too (a script's `curl`), not just the script."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

from edgecls.errors import EdgeclsError
from edgecls.runtime.records import PartRecord, is_reject
from edgecls.runtime.sinks import SINKS, Sink, SinkContext


class CommandSink(Sink):
    name = "on-trigger"

    def __init__(self, config):
        self.config = config.on_trigger
        self.context: SinkContext | None = None
        self.proc: subprocess.Popen | None = None  # the command running now, if any

    def open(self, context: SinkContext) -> None:
        import shutil

        program = self.config.command[0]
        if shutil.which(program) is None:
            raise EdgeclsError(f"--on-trigger: {program}: no such program (or not executable)")
        self.context = context

    def handle(self, event) -> None:
        if not is_reject(event):
            return
        env = {
            **os.environ,
            "EDGECLS_LABEL": event.label or "fail-safe",
            "EDGECLS_TIME": f"{event.time:.3f}",
            "EDGECLS_SOURCE": event.source,
        }
        if isinstance(event, PartRecord):
            env["EDGECLS_PART"] = str(event.part)
        else:
            env["EDGECLS_FRAME"] = str(event.frame)
        pipe = subprocess.PIPE
        with subprocess.Popen(
            self.config.command,
            stdin=pipe,
            stdout=pipe,
            stderr=pipe,
            env=env,
            start_new_session=True,
        ) as proc:
            self.proc = proc  # abort() may kill it from the loop's thread at the end
            try:
                _, stderr = proc.communicate(
                    json.dumps(event.to_dict()).encode(), timeout=self.config.timeout
                )
            except subprocess.TimeoutExpired:
                _kill(proc)  # wait, not communicate: a child that escaped may hold the pipes
                raise RuntimeError(
                    f"{self.config.command[0]} ran past {self.config.timeout:g} s and was killed"
                ) from None
            finally:
                self.proc = None
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(
                f"{self.config.command[0]} exited {proc.returncode}"
                + (f": {tail[0][:200]}" if tail else "")
            )

    def abort(self) -> None:
        """The run ends while a command still runs: kill it rather than leave it behind, an
        orphan of init once the run's process has exited."""
        if (proc := self.proc) is not None:
            _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    """The command and every process of its session (its pgid is its pid)."""
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@SINKS.register("on-trigger")
def make(config):
    return CommandSink(config) if config.on_trigger else None
