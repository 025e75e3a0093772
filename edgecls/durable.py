"""Writes that survive a power cut and never mix old with new: a file is written to a temporary
name, fsynced and renamed; a folder (a bundle, a training run) is built aside, fsynced and swapped
in with one rename. A board's SD card or a workstation's disk then holds the old version or the
new one, never a 0-byte or half-written file, whatever moment the power goes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgecls.errors import EdgeclsError


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
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
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()  # empty: nothing to lose
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new)  # it holds the old folder now
    else:
        aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, aside)
        try:
            os.rename(new, dest)
        except OSError:
            os.rename(aside, dest)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(dest.parent)


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

    def __enter__(self) -> StagedFolder:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)  # one a killed run of this pid left
        self.path.mkdir()
        return self

    def commit(self) -> Path:
        replace_folder(self.path, self.out)
        self.committed = True
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)


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
