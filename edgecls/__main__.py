"""`python -m edgecls` and the `edgecls` script. The command line's own start-up (Typer, rich,
the command modules) is imported here, so a Ctrl-C during it is a quiet `interrupted`, exit 130,
like a Ctrl-C anywhere later, not a traceback."""

import sys


def main() -> None:
    try:
        from edgecls.cli import main as command_line
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    command_line()


if __name__ == "__main__":
    main()
