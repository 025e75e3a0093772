"""The one registry helper: a named table filled by a decorator, whose lookups fail with one line
that lists the choices (models, export formats, backends, sinks, explain methods, samples...)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from edgecls.errors import EdgeclsError

T = TypeVar("T")


class Registry(Generic[T]):
    """`what` names the table in errors ("--model", "sample"); entries keep registration order."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[Hashable, T] = {}

    def register(self, name: Hashable, make: Callable[[object], T] | None = None):
        """Decorator: store `make(obj)` (or `obj` itself) under `name`, give `obj` back."""

        def deco(obj):
            self.add(name, make(obj) if make else obj)
            return obj

        return deco

    def add(self, name: Hashable, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: Hashable) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise EdgeclsError(
                f"{self.what} {name!r} is not known: choose one of {self.choices()}"
            ) from None

    def choices(self) -> str:
        return ", ".join(map(_show, self._items))

    @property
    def names(self) -> tuple:
        return tuple(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _show(name: Hashable) -> str:
    return "/".join(map(str, name)) if isinstance(name, tuple) else str(name)
