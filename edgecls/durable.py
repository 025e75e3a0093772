"""Writes that survive a power cut and never mix old with new: a file is written to a temporary
name, fsynced and renamed; a folder (a bundle, a training run) is built aside, fsynced and swapped
in with one rename. A board's SD card or a workstation's disk then holds the old version or the
new one, never a 0-byte or half-written file, whatever moment the power goes.

What is written aside carries the writer's PID in its name (`.NAME.partial-PID`, `.NAME.old-PID`,
`.NAME.tmp-PID`, `/tmp/edgecls-KIND-PID-*`). The writer removes it on every way out it survives:
a stop signal (SIGINT, SIGTERM, SIGHUP) is raised as `Interrupted`, so every `with` unwinds. What
a process that did not survive left (SIGKILL, a power cut) is removed by the next writer of the
same name once that PID is no longer an edgecls process; nothing else is ever removed."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgecls.errors import EdgeclsError


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    sweep_leftovers(path.parent, path.name, ("tmp",))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            _lock(f.fileno())  # a sweep from another PID namespace sees it is being written
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable_folder(folder: Path, option: str) -> None:
    """Fail at start, in one line, when an output folder can never be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".edgecls-probe-"):
            pass
    except FileExistsError:
        raise EdgeclsError(f"{option} {folder}: exists and is not a folder") from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise EdgeclsError(
            f"{option} {folder}: cannot write there ({exc.strerror or exc}{where}); "
            "choose a writable folder"
        ) from None


def fsync_tree(folder: Path) -> None:
    """Every file and folder below `folder` on disk before it is renamed into place."""
    for path in sorted(Path(folder).rglob("*"), reverse=True):  # files before their folders
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def replace_folder(new: Path, dest: Path) -> None:
    """`new` (fsynced here) becomes `dest`; an old `dest` is swapped out in the same step (Linux
    renameat2 RENAME_EXCHANGE) and only then removed. Where that call is missing, the old folder
    is moved aside first and put back if the second rename fails."""
    new, dest = Path(new), Path(dest)
    fsync_tree(new)
    old = None
    try:
        with signals_held():  # a stop signal between two renames would leave `dest` missing
            old = _swap(new, dest)
    finally:  # the old version goes, a stop signal held till here included
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)


def _swap(new: Path, dest: Path) -> Path | None:
    """The renames that put `new` at `dest`; returns where the old `dest` now is, if any."""
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()  # empty: nothing to lose
    if not dest.exists():
        os.rename(new, dest)
        return None
    if _exchange(new, dest):
        return new  # it holds the old folder now
    aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.rename(dest, aside)
    try:
        os.rename(new, dest)
    except OSError:
        os.rename(aside, dest)
        raise
    return aside


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    a, b = os.fsencode(a), os.fsencode(b)
    return renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0


def check_replaceable(
    out: Path, what: str, is_ours: Callable[[Path], bool], our_file: Callable[[str], object]
) -> None:
    """Refuse, in one line and before any work, an --out that the swap at the end would take
    from the user: the working folder (or one holding it), a file, or a non-empty folder that is
    not `what` edgecls wrote (`is_ours` says no) or that holds an entry `our_file` does not name
    (their notes, their images). A missing or empty folder is fine; so is an earlier `what`."""
    out = Path(out)
    refuse_working_folder(out)
    if out.exists() and not out.is_dir():
        raise EdgeclsError(f"--out {out}: is a file, not a folder; give a new or empty folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    foreign = sorted(e.name for e in out.iterdir() if not (e.is_file() and our_file(e.name)))
    shown = f" ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
    if not is_ours(out):
        raise EdgeclsError(
            f"--out {out}: is not {what}{shown if foreign else ''}; edgecls replaces only its "
            "own: give a new or empty folder"
        )
    if foreign:
        raise EdgeclsError(
            f"--out {out}: is {what} but also holds files edgecls did not write{shown}; move "
            "them, or give a new folder"
        )


def refuse_working_folder(out: Path) -> None:
    """An --out that a swap would replace under the process and the user's shell (`--out .`, or
    a folder holding the working folder): refused at the start, before any work."""
    where, here = Path(os.path.abspath(out)), Path.cwd()
    if where == here or where in here.parents:
        raise EdgeclsError(
            f"--out {out}: is the folder you are in (or holds it), which would be replaced under "
            "you; give a new folder, e.g. --out runs/NAME"
        )


class StagedFolder:
    """The one way edgecls writes a folder (a run, a bundle, a report): built in a temporary
    sibling (`path`), swapped in whole by `commit()`; leaving the block without a commit removes
    the sibling and nothing else, so `out` is whole or as it was, a power cut included."""

    def __init__(self, out: Path):
        self.out = Path(os.path.abspath(out))  # `runs/x/..` names runs, with a name to put beside
        self.path = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self.committed = False
        self.held: int | None = None

    def __enter__(self) -> StagedFolder:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        sweep_leftovers(self.out.parent, self.out.name)  # what killed writers of `out` left
        shutil.rmtree(self.path, ignore_errors=True)  # one a killed run of this pid left
        self.path.mkdir()
        self.held = hold(self.path)
        return self

    def commit(self) -> Path:
        try:
            replace_folder(self.path, self.out)
        except Interrupted as exc:  # a signal held through the swap comes after it
            self.committed = exc.written = not os.path.lexists(self.path)
            raise
        self.committed = True
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
        release(self.held)


@contextlib.contextmanager
def staged_folder(out: Path, what: str) -> Iterator[Path]:
    """A StagedFolder for `what` (the bundle, the report), committed when the block ends well.
    Disk full or read-only destinations are one error line naming --out."""
    try:
        with StagedFolder(out) as stage:
            yield stage.path
            stage.commit()
    except OSError as exc:
        raise EdgeclsError(
            f"--out {out}: cannot write {what} ({exc.strerror or exc}); free space or "
            "choose a writable folder; nothing was changed"
        ) from None


# --- what killed writers left behind -----------------------------------------------------------

LEFTOVER_KINDS = ("partial", "old", "tmp")
LEGACY_SCRATCH_SECONDS = 24 * 3600  # scratch of an edgecls before PIDs were in the names


def process_gone(pid: int) -> bool:
    """True when no edgecls process can hold `pid`'s leftovers: none runs with that PID, or a
    zombie does, or one that is not Python (a PID taken again after a reboot). Where /proc
    cannot say, a running PID counts as the owner: nothing of a live writer is removed."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except OSError:  # PermissionError: another user's process
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().lower()
    except (OSError, IndexError):
        return False
    return state == "Z" or not (b"python" in command or b"edgecls" in command)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def hold(path: Path) -> int | None:
    """An advisory lock on the folder this process is writing, held until `release`: a PID says
    nothing across PID namespaces (a container writing into a mounted folder) or machines (NFS),
    a lock does, so the sweep of another process never takes a live writer's folder."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if not _lock(fd):
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def held_elsewhere(path: Path) -> bool:
    """Whether a live process holds `path` (`hold`); False where it cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # and the lock taken, if it was
    return False


_SCRATCH_HELD: dict[Path, int | None] = {}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def sweep_leftovers(folder: Path, name: str, kinds: tuple[str, ...] = LEFTOVER_KINDS) -> None:
    """Remove `.NAME.partial-PID` (a folder being built), `.NAME.old-PID` (the version a swap
    moved aside) and `.NAME.tmp-PID` (a file being written) whose writer is gone. An `.old` whose
    swap died between its two renames is the last whole version: it is put back when `NAME` is
    missing, never removed."""
    folder = Path(folder)
    for kind in kinds:
        for path in folder.glob(f".{glob.escape(name)}.{kind}-*"):
            pid = path.name.rpartition("-")[2]
            if not pid.isdigit() or not process_gone(int(pid)) or held_elsewhere(path):
                continue
            dest = folder / name
            if kind == "old" and not os.path.lexists(dest):
                with contextlib.suppress(OSError):
                    os.rename(path, dest)
                continue
            _remove(path)


def _sweep_scratch(kind: str) -> None:
    pattern = re.compile(rf"edgecls-{re.escape(kind)}-(\d+)-")
    now = time.time()
    for path in Path(tempfile.gettempdir()).glob(f"edgecls-{glob.escape(kind)}-*"):
        match = pattern.match(path.name)
        try:
            if match:
                stale = process_gone(int(match.group(1)))
            else:
                stale = now - path.stat().st_mtime > LEGACY_SCRATCH_SECONDS
        except OSError:
            continue
        if stale and not held_elsewhere(path):
            _remove(path)


def new_scratch(kind: str) -> Path:
    """A private folder in the system's temporary folder, `edgecls-KIND-PID-…`, after removing
    those that killed processes left there (their PID says so)."""
    _sweep_scratch(kind)
    path = Path(tempfile.mkdtemp(prefix=f"edgecls-{kind}-{os.getpid()}-"))
    _SCRATCH_HELD[path] = hold(path)
    return path


@contextlib.contextmanager
def scratch_folder(kind: str) -> Iterator[Path]:
    """`new_scratch(kind)`, removed when the block ends, however it ends."""
    path = new_scratch(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        release(_SCRATCH_HELD.pop(path, None))


# --- stop signals ------------------------------------------------------------------------------

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised as Ctrl-C is, so every `with` unwinds and removes what it staged;
    the command exits 128 + `signum` (130 Ctrl-C, 129 SIGHUP, 143 SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum
        self.written = False  # the folder was swapped in just before the signal was raised

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """`with StopSignals() as stops:` SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main
    thread (SIGTERM's default would kill the process with its staging folders on disk). Inside
    `stops.deferred()` the first signal is only noted in `stops.signal`, for work that must end
    at a step of its own (a training loop, its reports); a second one raises. A signal ignored
    at start (`nohup`) stays ignored; off the main thread nothing is installed."""

    def __init__(self):
        self.signal: int | None = None  # the first that came
        self.count = 0
        self.raising = True
        self._previous: dict = {}

    def _handle(self, signum, _frame):
        self.count += 1
        if self.signal is None:
            self.signal = signum
        if not (self.raising or self.count > 1):
            return
        if _HOLD["depth"]:
            _HOLD["pending"] = signum
        else:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopSignals]:
        self.raising = False
        try:
            yield self
        finally:
            self.raising = True

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        raised = self.signal is not None and (self.raising or self.count > 1)
        if raised and exc is not None and not isinstance(exc, KeyboardInterrupt):
            # the handler's Interrupted, turned into another error by the code it landed in
            # (TensorFlow's tracing wraps it in a TypeError): still a stop, exit 128 + signal
            raise Interrupted(self.signal) from exc


_HOLD = {"depth": 0, "pending": None}  # see signals_held


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A stop signal that comes inside the block is raised when it ends, for steps that must not
    be cut in two (the renames of a swap). A signal mask would not do: another thread takes the
    signal and Python still runs the handler in the main thread, inside the block."""
    _HOLD["depth"] += 1
    try:
        yield
    finally:
        _HOLD["depth"] -= 1
        pending, _HOLD["pending"] = _HOLD["pending"], None
        if pending is not None and _HOLD["depth"] == 0:
            raise Interrupted(pending)
        _HOLD["pending"] = pending
