"""Typed dataclasses from JSON/YAML data, validated in one place: the bundle manifest, a run
folder's config.json and the device config file load through `from_dict`, so a wrong type, a
missing or unknown key becomes one line naming the file and the field (`artifacts[1].sha256`),
never a KeyError mid-run. Field annotations are the schema; `__post_init__` adds the checks
types cannot say (ranges, cross-field consistency) by raising ValueError.

The files they come from are users' files, so they are read like any input (`read_limited`):
a regular file checked before it is opened, within a size limit, and parsed within a depth limit
(`parse_json`), so a FIFO, /dev/zero or a 100000-deep array is one line, never a hang or a
traceback."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

from edgecls.errors import EdgeclsError

T = TypeVar("T")


class SchemaError(EdgeclsError):
    """Invalid data at `field`; `where` names the file it came from."""

    def __init__(self, where: str, field: str, problem: str):
        self.where, self.field, self.problem = where, field, problem
        super().__init__(f"{where}: {field or 'top level'}: {problem}")


class FileRefused(EdgeclsError):
    """A file edgecls will not read (not a regular file, too large, unreadable): the message says
    why and what to give instead, without the path, which the caller puts first."""


# A manifest or a run's config.json is a few kB; 8 MB of JSON is already ~160 MB of objects.
MAX_JSON_BYTES = 8_000_000
MAX_JSON_DEPTH = 64  # levels of nesting; ours have under 10
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse(st: os.stat_result, limit: int, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
        raise FileRefused(f"{kind}, not a regular file; give {what}")
    if st.st_size > limit:
        raise FileRefused(
            f"{st.st_size / 1e6:,.1f} MB, above the {limit / 1e6:g} MB limit for {what}"
        )


@contextlib.contextmanager
def open_regular(path: str | Path, limit: int, what: str = "a file"):
    """(binary file, size) of a regular file of at most `limit` bytes, else FileRefused. Checked
    with stat before the open (a FIFO would block it, /dev/zero never end, a sparse file fill
    memory), opened without blocking, and checked again on what was opened; a symlink is followed
    and judged by its target. Read no more than `size`: the file may grow meanwhile."""
    try:
        _refuse(os.stat(path), limit, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(f"cannot read file ({exc.strerror or exc})") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        _refuse(st, limit, what)
        yield f, st.st_size


def read_limited(path: str | Path, limit: int, what: str = "a file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (`open_regular`), else FileRefused."""
    with open_regular(path, limit, what) as (f, size):
        try:
            return f.read(size)
        except OSError as exc:
            raise FileRefused(f"cannot read file ({exc.strerror or exc})") from None


def parse_json(text: str | bytes, where: str) -> Any:
    """Parsed JSON; text that is not JSON, or nests deeper than MAX_JSON_DEPTH (where the parser
    or anything walking the result would run out of stack), is one SchemaError naming `where`."""
    try:
        data = json.loads(text)
    except ValueError as exc:  # not JSON, not UTF-8, an integer of more digits than Python takes
        raise SchemaError(where, "", f"not valid JSON ({exc})") from None
    except RecursionError:  # the parser's own stack ran out
        data = _TOO_DEEP
    if data is _TOO_DEEP or _deeper_than(data, MAX_JSON_DEPTH):
        raise SchemaError(
            where, "", f"nested more than {MAX_JSON_DEPTH} levels deep, which no edgecls file is"
        )
    return data


_TOO_DEEP = object()


def _deeper_than(data: Any, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:  # a loop, not recursion: the walk must not run out of stack itself
        value, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
    return False


def load_json(path: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A user's JSON file (a run's config.json, a cache), read like any input (`read_limited`)
    and parsed by `parse_json`: whatever is wrong with it is one line naming it."""
    try:
        text = read_limited(path, limit, "a JSON file").decode("utf-8")
    except FileRefused as exc:
        raise EdgeclsError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise EdgeclsError(f"{path}: not UTF-8 text, so not JSON") from None
    return parse_json(text, str(path))


def from_dict(cls: type[T], data: Any, where: str, *, strict: bool = True) -> T:
    """Build `cls` from parsed JSON/YAML; `strict` refuses keys the dataclass does not know."""
    return _convert(cls, data, where, "", strict)


def to_dict(obj: Any) -> Any:
    """The JSON-ready form of a dataclass tree (tuples as lists, Paths as strings); fields that
    are None are left out, `from_dict` gives them back as their default."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}


def _type_name(tp) -> str:
    if tp in (int, float):
        return "a number"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(tp, value, where: str, field: str, strict: bool):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _union(tp, value, where, field, strict)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where, field, strict)
    if origin in (list, tuple):
        return _sequence(tp, origin, value, where, field, strict)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SchemaError(where, field, f"must be an object, not {_json_type(value)}")
        args = typing.get_args(tp)
        vt = args[1] if args else Any
        return {k: _convert(vt, v, where, f"{field}.{k}", strict) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(repr, typing.get_args(tp)))
            raise SchemaError(where, field, f"{value!r} is not one of {choices}")
        return value
    return _scalar(tp, value, where, field)


def _union(tp, value, where, field, strict):
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise SchemaError(where, field, "must not be null")
    last = None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, where, field, strict)
        except SchemaError as exc:
            last = exc
    raise last  # type: ignore[misc]


def _sequence(tp, origin, value, where, field, strict):
    if not isinstance(value, (list, tuple)):
        raise SchemaError(where, field, f"must be a list, not {_json_type(value)}")
    args = typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise SchemaError(where, field, f"must have {len(args)} items, not {len(value)}")
        types_ = args
    else:
        types_ = [args[0] if args else Any] * len(value)
    items = [
        _convert(t, v, where, f"{field}[{i}]", strict)
        for i, (t, v) in enumerate(zip(types_, value, strict=True))
    ]
    return tuple(items) if origin is tuple else items


def _scalar(tp, value, where, field):
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise SchemaError(where, field, "must be a path (a non-empty string)")
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise SchemaError(where, field, f"must be a number, not {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SchemaError(where, field, f"must be {_type_name(tp)}, not {_json_type(value)}")
    return value


def _dataclass(cls, value, where, field, strict):
    if not isinstance(value, dict):
        raise SchemaError(where, field, f"must be an object, not {_json_type(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown and strict:
        raise SchemaError(
            where,
            _join(field, unknown[0]),
            f"unknown key (known: {', '.join(fields)})",
        )
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], where, _join(field, name), strict)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(where, _join(field, name), "missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SchemaError(where, field, str(exc)) from None


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return _NAMES.get(type(value), type(value).__name__)


def option(default, help: str, **extra):
    """A field of a command's options table: its default and its help (and, with
    `argument=True`, a positional argument), from which the CLI and the device file come."""
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def default_of(cls: type, name: str) -> Any:
    """The default of a dataclass field, so an options table can take it from the config it
    builds instead of writing it a second time."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default
