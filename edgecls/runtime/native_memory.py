"""A released FFmpeg capture leaves its freed pages inside glibc's heaps; a stream that reconnects
for months would ratchet RSS up a little each time. The other half, one malloc arena per capture
thread, must be limited before the process starts any thread (MALLOC_ARENA_MAX=2 in the systemd
unit): glibc fixes the arena limit the first time two threads allocate at once, so a mallopt call
from here would come too late. glibc only (Raspberry Pi OS, JetPack); elsewhere nothing to do."""

from __future__ import annotations

import ctypes


def return_freed() -> None:
    """Hand whole free pages back to the system (after a capture is released)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _libc():
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None
