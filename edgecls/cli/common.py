"""What every command shares: the Typer apps, the global options, the consoles, and one way to
fail."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import typing

import typer
import typer.core
from rich.console import Console
from rich.text import Text

from edgecls import __version__, logs
from edgecls.errors import EdgeclsError


def _is(exc: BaseException, name: str) -> bool:
    """Click's exception classes by name: Typer vendors Click under another module in recent
    releases, and uses Click itself in older ones."""
    return any(k.__name__ == name for k in type(exc).__mro__)


class OneLineErrors(typer.core.TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one `error:` line and exit 2,
    like every other mistake a user can fix, not a usage banner in a box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except Exception as exc:
            if _is(exc, "NoArgsIsHelpError"):  # the help was printed: nothing to add
                code = 2
            elif _is(exc, "UsageError"):
                path = exc.ctx.command_path.partition(" ")[2] if exc.ctx else ""
                hint = f" (see: edgecls {path + ' ' if path else ''}--help)"
                err.print(Text.assemble(("error: ", "bold red"), exc.format_message() + hint))
                code = 2
            elif _is(exc, "Abort"):
                err.print("interrupted")
                code = 130
            else:
                raise
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Image classifiers from a folder of photos to a camera on an edge board.",
)
data_app = typer.Typer(no_args_is_help=True, help="Sample data and calibration sets.")
app.add_typer(data_app, name="data")

# Logs and pipes get no terminal width; 80 columns would cut the tables' file names.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)


# A module missing on this install -> the extra that brings it (top-level import names).
EXTRAS = {
    **dict.fromkeys(
        ("tensorflow", "keras", "tf2onnx", "onnx", "shap", "matplotlib", "PIL"), "train"
    ),
    **dict.fromkeys(
        ("onnxruntime", "ai_edge_litert", "paho", "yaml", "gpiozero", "pymodbus", "asyncua"),
        "device",
    ),
}


def _print_version(value: bool) -> None:
    if value:
        print(f"edgecls {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version"
    ),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="no progress bars, tables or notes on stdout, only --json output; stderr still warns",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="let TensorFlow, converters and delegates print their own logs",
    ),
):
    """Options for every command; set before any command imports TensorFlow."""
    if quiet and verbose:
        fail("--quiet and --verbose contradict each other: give one")
    logs.configure(logs.QUIET if quiet else logs.VERBOSE if verbose else logs.NORMAL)
    console.quiet = quiet  # set on every call: CliRunner reuses the one console


def fail(message: str, code: int = 2):
    from edgecls.redact import one_line, redact

    # a URL's password never reaches the journal, whichever library's message carries it
    err.print(Text.assemble(("error: ", "bold red"), one_line(redact(message))))
    raise typer.Exit(code)


def command(target=app, name: str | None = None, stops: bool = True):
    """Register a command whose user errors become one line on stderr and a non-zero exit, and
    whose stop signals (SIGINT, SIGTERM, SIGHUP) unwind it like Ctrl-C, so what it staged is
    removed and it exits 128 + the signal; `stops=False` for one that handles them itself."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from edgecls.durable import Interrupted, StopSignals

            try:
                with StopSignals() if stops else contextlib.nullcontext():
                    return fn(*args, **kwargs)
            except EdgeclsError as exc:
                fail(str(exc), exc.exit_code)
            except ModuleNotFoundError as exc:
                missing_extra(exc)
            except Interrupted as exc:
                err.print(f"interrupted ({exc})")
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                err.print("interrupted")
                raise typer.Exit(130) from None

        return target.command(name)(wrapper)

    return deco


def missing_extra(exc: ModuleNotFoundError):
    """A device-only install running a workstation command: one line that says what to install."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        raise exc
    fail(
        f"this command needs {module}, which is not installed here: pip install 'edgecls[{extra}]'"
    )


def table_parameters(table: type, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """A command's options made from its options table (a dataclass whose fields carry their
    help, see schema.option): one table for the CLI, the defaults and (for `run`) the device
    file. Booleans get --x/--no-x unless `flag="--x"` names the one flag; `argument=True` is
    positional; other metadata (min=...) is passed to Typer."""
    hints = typing.get_type_hints(table)
    params = []
    for f in dataclasses.fields(table):
        if f.name in skip:
            continue
        extra = {k: v for k, v in f.metadata.items() if k not in ("help", "argument", "flag")}
        if f.metadata.get("argument"):
            default = typer.Argument(f.default, help=f.metadata["help"], **extra)
        else:
            flag = "--" + f.name.replace("_", "-")
            decl = f"{flag}/--no-{flag[2:]}" if hints[f.name] is bool else flag
            decl = f.metadata.get("flag", decl)
            default = typer.Option(f.default, decl, help=f.metadata["help"], **extra)
        kind = inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=hints[f.name]))
    return params


def with_signature(fn, params: list[inspect.Parameter]):
    """`fn(**options)` with the signature Typer reads its options from."""
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn
