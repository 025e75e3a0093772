"""The JSON log: one line per record and decision, on stdout (`--json`) or in a rotating file
(`--log-file`). Under systemd, stdout is the journal, and millions of lines a day do not belong
there: `--json` then writes to `$LOGS_DIRECTORY/records.jsonl` (the unit's LogsDirectory=)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.runtime.sinks import SINKS, Sink, SinkContext


def stdout_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device:inode of the journal socket it gave us."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(v) for v in stream.split(":"))
        st = os.fstat(sys.stdout.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def records_file(config) -> Path | None:
    """Where records go: --log-file, or under systemd the service's logs directory."""
    if config.log_file:
        return Path(config.log_file)
    if config.json and os.environ.get("LOGS_DIRECTORY") and stdout_is_journal():
        return Path(os.environ["LOGS_DIRECTORY"].split(":")[0]) / "records.jsonl"
    return None


class RotatingFile:
    """Append lines; past `max_bytes` the file becomes NAME.1 (NAME.1 becomes NAME.2, ...).

    Each line is one unbuffered write; one the disk could take only in part (full, over quota)
    is cut off again, so the file holds whole lines only, and the next write starts on a line
    of its own once there is room."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self._open()
        except OSError as exc:
            raise EdgeclsError(f"--log-file {path}: cannot write ({exc.strerror})") from None
        self.size = self.file.seek(0, os.SEEK_END)

    def _open(self):
        return open(self.path, "ab", buffering=0)  # closed in close() or rotate()

    def write(self, line: str) -> None:
        data = line.encode("utf-8")
        if self.size + len(data) > self.max_bytes and self.size:
            self.rotate()
        # the file's own size, not ours: logrotate's copytruncate or another writer may change it
        before = os.fstat(self.file.fileno()).st_size
        try:
            written = self.file.write(data)
            if written != len(data):  # a short write: the disk took only part of the line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        except OSError:
            with contextlib.suppress(OSError):
                if os.fstat(self.file.fileno()).st_size > before:
                    self.file.truncate(before)  # back to the last whole line, never beyond
            raise
        self.size = before + len(data)

    def rotate(self) -> None:
        self.file.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.file = self._open()
        self.size = 0

    def flush(self) -> None:
        pass  # every line is written through

    def close(self) -> None:
        self.file.close()


class JsonLogSink(Sink):
    name = "json"

    def __init__(self, config):
        self.config = config
        self.path = records_file(config)
        self.out = None

    def open(self, context: SinkContext) -> None:
        if self.path:
            _refuse_special(self.path)
            mb = self.config.log_max_mb
            self.out = RotatingFile(self.path, int(mb * 1024 * 1024), self.config.log_backups)
            if not self.config.log_file:
                context.log(f"records: {self.path} (stdout is the journal)")
        else:
            self.out = context.out or sys.stdout

    def handle(self, event) -> None:
        self.out.write(json.dumps(event.to_dict()) + "\n")
        self.out.flush()

    def close(self) -> None:
        if isinstance(self.out, RotatingFile):
            self.out.close()


@SINKS.register("json")
def make(config):
    return JsonLogSink(config) if (config.json or config.log_file) else None


def _refuse_special(path) -> None:
    """A FIFO would block the open (no stop signal ends it), a device or a socket is no file to
    rotate: --log-file takes a regular file, or a name to create."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing: created; unreadable: the open says why
    if not stat.S_ISREG(mode):
        raise EdgeclsError(
            f"--log-file {path}: not a regular file (a FIFO, a device, a socket or a folder); "
            "give a file to write, or leave --log-file out for stdout"
        )
