"""Quiet by default: what native libraries print on their own is noise for our users.

TensorFlow writes absl lines ("WARNING: All log messages before absl::InitializeLog() ...",
oneDNN, "Could not find cuda drivers", "failed call to cuInit") straight to file descriptor 2
while it is imported, before any Python setting can reach it; LiteRT prints "INFO: Created
TensorFlow Lite XNNPACK delegate" on every load and the TFLite converter its MLIR passes. So:
environment variables for what listens to them, Python loggers for the rest, and an fd-2
silencer around the native calls that listen to nothing. `--verbose` turns all of it off.
TF-free: the board imports this too.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

QUIET, NORMAL, VERBOSE = -1, 0, 1

# Read by TensorFlow, gRPC and glog when they load; a value the user exported wins.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}
VERBOSE_ENV = {"TF_CPP_MIN_LOG_LEVEL": "0", "GRPC_VERBOSITY": "INFO", "GLOG_minloglevel": "0"}
# Python loggers of libraries that log progress at INFO/WARNING on their own.
CHATTY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py", "jax", "onnxruntime")
# Packages whose import writes to fd 2 from C++ (absl before InitializeLog).
CHATTY_IMPORTS = ("tensorflow",)

_level = NORMAL
_fd2_lock = threading.RLock()  # fd 2 is process-wide: one thread redirects it at a time


def verbose() -> bool:
    return _level >= VERBOSE


def quiet_environment() -> None:
    """Defaults for native libraries that have not loaded yet."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def configure(new_level: int) -> None:
    """Set by the CLI before any command imports TensorFlow: native log levels, Python loggers,
    and the import hook that silences TensorFlow's import-time chatter."""
    global _level
    _level = new_level
    if new_level >= VERBOSE:
        os.environ.update(VERBOSE_ENV)
        logger_level = logging.INFO
    else:
        quiet_environment()
        logger_level = logging.ERROR
        install_quiet_imports()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logger_level)


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool | None = None) -> Iterator[None]:
    """Send file descriptor 2 (what C and C++ code print) to a temporary file for the block.

    Default: on unless --verbose. Should the block raise, what was captured is written back to
    stderr, since then it may be the explanation. Process-wide, so keep it around short native
    calls (an interpreter load, a converter), not around a loop with threads that log. While
    another thread holds the redirection, the block runs inside it without waiting: waiting
    could deadlock against the import lock, and two redirections would restore out of order."""
    if enabled is None:
        enabled = not verbose()
    if not enabled or not _fd2_lock.acquire(blocking=False):
        yield
        return
    try:
        with _fd2_to_temporary_file():
            yield
    finally:
        _fd2_lock.release()


@contextlib.contextmanager
def _fd2_to_temporary_file() -> Iterator[None]:
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (closed by a daemon manager): nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                os.write(2, sink.read())


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader's exec_module with fd 2 silenced; everything else is forwarded."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_stderr_silenced():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds CHATTY_IMPORTS through the other finders and wraps their loader in _QuietLoader."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names or verbose():
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install_quiet_imports(names: tuple[str, ...] = CHATTY_IMPORTS) -> None:
    """Idempotent; a package already imported is not affected (nothing left to silence)."""
    if not any(isinstance(f, _QuietImports) and f.names == names for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImports(names))
