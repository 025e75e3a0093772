"""One exception type for mistakes a user can fix; the CLI prints it as one line, no traceback."""


class EdgeclsError(Exception):
    """A problem with the user's input: its message names the file or option and what to do."""
