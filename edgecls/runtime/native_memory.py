"""glibc's allocator, told how a board's long run behaves, so months of camera reconnects do not
ratchet RSS up. Each capture thread would otherwise get a malloc arena of its own (up to 8 per
core), and a released FFmpeg capture leaves its freed pages inside the heap. Both calls are glibc's
(Raspberry Pi OS, JetPack); elsewhere they are skipped."""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's mallopt parameter, as MALLOC_ARENA_MAX in the environment does
ARENAS = 2  # the main heap and one for every other thread: capture, sinks, runtime pools


def limit_arenas(arenas: int = ARENAS) -> None:
    """Before the loop's threads start; the systemd unit sets MALLOC_ARENA_MAX the same way."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)


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
