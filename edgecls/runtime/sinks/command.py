"""`--on-trigger CMD`: run a program on each decision or part to reject, for anything GPIO and MQTT
do not reach (a relay board's CLI, a PLC tool, a siren). No shell: the command is split like a
shell would, but not interpreted (write `sh -c '...'` to ask for one). The event arrives as JSON
on stdin and in EDGECLS_* variables; one command runs at a time and is killed after its timeout,
so a hanging program costs queued decisions (counted), never the loop. Each runs in a session of
its own, so a kill reaches what it started too (a script's `curl`), not just the script. What it
prints costs no memory: its output goes to /dev/null, and of its error output only the last
TAIL_BYTES are kept, for the warning (a command that prints without end is killed at its timeout
having cost 4 kB, not gigabytes)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time

from edgecls.errors import EdgeclsError
from edgecls.runtime.records import PartRecord, is_reject
from edgecls.runtime.sinks import SINKS, Sink, SinkContext

TAIL_BYTES = 4096  # of the command's stderr, for the one-line warning when it fails


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
        with subprocess.Popen(
            self.config.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        ) as proc:
            self.proc = proc  # abort() may kill it from the loop's thread at the end
            try:
                event_json = json.dumps(event.to_dict()).encode()
                stderr = _talk(proc, event_json, self.config.timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)  # wait, not communicate: a child that escaped may hold the pipes
                raise RuntimeError(
                    f"{self.config.command[0]} ran past {self.config.timeout:g} s and was killed"
                ) from None
            finally:
                self.proc = None
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:]
            line = "".join(ch if ch.isprintable() else "?" for ch in tail[0][:200]) if tail else ""
            raise RuntimeError(
                f"{self.config.command[0]} exited {proc.returncode}" + (f": {line}" if line else "")
            )

    def abort(self) -> None:
        """The run ends while a command still runs: kill it rather than leave it behind, an
        orphan of init once the run's process has exited."""
        if (proc := self.proc) is not None:
            _kill(proc)


def _talk(proc: subprocess.Popen, data: bytes, timeout: float) -> bytes:
    """Write `data` to the command's stdin and read its stderr in chunks as it comes, keeping the
    last TAIL_BYTES, until it exits; TimeoutExpired past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    tail, view = b"", memoryview(data)
    with selectors.DefaultSelector() as sel:
        for pipe, mask in (
            (proc.stdin, selectors.EVENT_WRITE),
            (proc.stderr, selectors.EVENT_READ),
        ):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, mask)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ in sel.select(left):
                if key.fileobj is proc.stdin:
                    view = _feed(sel, proc.stdin, view)
                    continue
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    _done(sel, proc.stderr)
                tail = (tail + chunk)[-TAIL_BYTES:]
    proc.wait(max(0.0, deadline - time.monotonic()))
    return tail


def _feed(sel: selectors.BaseSelector, pipe, view: memoryview) -> memoryview:
    """Write what the pipe takes now; close it when all is written or the command stopped
    reading (it need not read the event)."""
    try:
        view = view[os.write(pipe.fileno(), view) :]
    except BlockingIOError:
        return view
    except BrokenPipeError:
        view = view[len(view) :]
    if not view:
        _done(sel, pipe)
    return view


def _done(sel: selectors.BaseSelector, pipe) -> None:
    sel.unregister(pipe)
    pipe.close()


def _kill(proc: subprocess.Popen) -> None:
    """The command and every process of its session (its pgid is its pid)."""
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@SINKS.register("on-trigger")
def make(config):
    return CommandSink(config) if config.on_trigger else None
