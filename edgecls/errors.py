"""The errors a user can fix: the CLI prints each as one line, no traceback, with an exit code
that tells systemd whether trying again can help (`SchemaError` in schema.py is one too)."""


class EdgeclsError(Exception):
    """A problem with the user's input: its message names the file or option and what to do.
    Exit code 2: a setting that will not work until someone changes it (systemd does not
    restart the service for it)."""

    exit_code = 2


class SourceUnavailable(EdgeclsError):
    """A live source (camera, stream) that cannot be opened now but may come: a USB camera that
    enumerates late, a stream not yet up. Exit code 1, so a service restarts and tries again."""

    exit_code = 1
