"""Packages whose public names load on first use: importing a light module of the package (the
format table, the model registry) never loads its heavy pipeline, and `edgecls --help` stays
free of TensorFlow."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """The package's `__getattr__`: public name -> the submodule (of `package`) that holds it."""

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
