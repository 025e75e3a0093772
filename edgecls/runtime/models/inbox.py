"""`--inbox DIR`: bundles dropped in a folder. A sub-folder `DIR/NAME/` is taken once its
`manifest.json` exists and nothing in it (names, sizes, modification times) has changed for the
settle time (1 s): a copy still being written changes, an export that renames a whole folder into
place is settled at once. Folders whose name starts with a dot are someone's work in progress and
never looked at. The inbox is read only: what is taken is copied into the state folder first."""

from __future__ import annotations

import time
from pathlib import Path

MAX_FILES = 256  # a bundle is a handful of files: a bigger folder is no bundle, not walked on


def _signature(folder: Path) -> tuple | None:
    """What changes while a folder is being written; None while it has no manifest.json yet."""
    if not (folder / "manifest.json").is_file():
        return None
    seen = []
    for path in folder.rglob("*"):
        try:
            st = path.lstat()
        except OSError:  # removed while we looked: it is changing
            return ("changing", time.monotonic())
        seen.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns))
        if len(seen) > MAX_FILES:
            break
    return tuple(sorted(seen))


class Inbox:
    """Settled folders, each given once for each content it settles with."""

    def __init__(self, folder: Path, settle: float = 1.0):
        self.folder, self.settle = Path(folder), settle
        self.watch: dict[str, tuple[tuple, float]] = {}  # name -> (signature, unchanged since)
        self.given: dict[str, tuple] = {}  # name -> the signature it was given with

    def settled(self) -> list[Path]:
        """Folders that settled since the last look, oldest name first."""
        try:
            entries = sorted(p for p in self.folder.iterdir() if p.is_dir())
        except OSError:
            return []
        now, ready = time.monotonic(), []
        for path in entries:
            if path.name.startswith("."):
                continue
            sig = _signature(path)
            if sig is None or self.given.get(path.name) == sig:
                continue
            last = self.watch.get(path.name)
            if last is None or last[0] != sig:
                self.watch[path.name] = (sig, now)
            elif now - last[1] >= self.settle:
                self.given[path.name] = sig
                del self.watch[path.name]
                ready.append(path)
        return ready
