"""Part ids that increase and never repeat, across restarts too, without a disk write per part:
the file holds the start of the next block of ids, written (atomically) before the first id of a
block is given out, so a restart or a power cut skips the rest of a block and never reuses one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edgecls.durable import write_text_atomic
from edgecls.errors import EdgeclsError
from edgecls.schema import read_limited

BLOCK = 1000
LIMIT = 2**32  # a Modbus register pair holds it; the ids wrap to 1 after four billion parts


def default_state() -> Path:
    """systemd's StateDirectory= for the service, else the user's state folder."""
    base = os.environ.get("STATE_DIRECTORY") or os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return (root if os.environ.get("STATE_DIRECTORY") else root / "edgecls") / "next-part-id"


class PartIds:
    def __init__(self, path: Path | None, log=None):
        self.path = Path(path) if path else default_state()
        self.log = log or (lambda msg: None)
        self.lock = threading.Lock()
        self.failing = False  # the file could not be written: said once
        try:
            data = read_limited(self.path, 64, "a part-id file") if self.path.exists() else b"1"
            self.next = int(data.decode("ascii").strip())
        except (OSError, ValueError, EdgeclsError) as exc:  # FileRefused: a FIFO, a folder...
            raise EdgeclsError(
                f"--part-state {self.path}: cannot read the next part id ({exc}); fix or remove "
                "the file (ids then start again at 1)"
            ) from None
        if not 1 <= self.next < LIMIT:
            self.next = 1
        self.reserved = self.next  # ids below this are written down as used
        self._reserve()

    def _reserve(self) -> None:
        end = self.next + BLOCK
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, f"{end}\n")
        except OSError as exc:
            raise EdgeclsError(
                f"--part-state {self.path}: cannot write ({exc.strerror}); give a writable file"
            ) from None
        self.reserved = end

    def _next_block(self) -> None:
        """A part is never refused for its id: where the file cannot be written now (a full
        disk), ids go on from memory, and a restart before the file is written again may give
        an id of this block a second time, which the warning says."""
        try:
            self._reserve()
        except EdgeclsError as exc:
            self.reserved = self.next + BLOCK
            if not self.failing:
                self.log(f"warning: {exc}; part ids go on, but may repeat after a restart")
            self.failing = True
        else:
            self.failing = False

    def take(self) -> int:
        with self.lock:
            if self.next >= LIMIT:
                self.next = self.reserved = 1
            if self.next >= self.reserved:
                self._next_block()
            part, self.next = self.next, self.next + 1
            return part
