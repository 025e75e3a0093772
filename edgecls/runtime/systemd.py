"""sd_notify without dependencies: tell systemd the loop is ready, what it is doing, and that it
is still alive.

Under `Type=notify` systemd waits for READY=1 before it calls the service started; with
`WatchdogSec=` it restarts a service that stops sending WATCHDOG=1, which is how a stalled camera
ends in a restart instead of a silent, frozen line. Outside systemd ($NOTIFY_SOCKET unset) every
call is a no-op, so the loop calls these unconditionally.
"""

from __future__ import annotations

import os
import socket
import time


def _address(path: str) -> str | bytes:
    # "@name" is Linux's abstract namespace: a leading NUL byte, no file.
    return b"\0" + path[1:].encode() if path.startswith("@") else path


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not under systemd or the socket is gone."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(path))
            sock.sendall(message.encode())
        return True
    except OSError:
        # A notification must never take the loop down: systemd restarting is the worst case.
        return False


def ready() -> bool:
    return notify("READY=1")


def status(text: str) -> bool:
    """One line shown by `systemctl status edgecls`."""
    return notify("STATUS=" + " ".join(text.split()))


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between pings: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when
    the watchdog is off or meant for another process (WATCHDOG_PID)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Call `ping()` once per frame: it sends WATCHDOG=1 at most every WATCHDOG_USEC/2, so a loop
    that stops getting frames stops pinging and systemd restarts it."""

    def __init__(self, clock=time.monotonic):
        self.interval = watchdog_interval()
        self._clock = clock
        self._last: float | None = None
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def ping(self) -> bool:
        """True when a ping went out now."""
        if self.interval is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        if notify("WATCHDOG=1"):
            self.sent += 1
            return True
        return False
