"""The shape of the package, read from its source (nothing is imported or run): the board side
never reaches TensorFlow, functions stay short, every registry lists its choices."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgecls"
HEAVY = {"tensorflow", "keras", "shap", "tf2onnx", "tf_keras", "matplotlib"}
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Every module named by an import anywhere in the file, inside functions too."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level or None]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{a.name}" for a in node.names)
        elif (  # importlib.import_module("edgecls.x") with a literal name
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _graph():
    mods = _modules()
    deps, heavy = {}, {}
    for name, path in mods.items():
        imported = _imports(ast.parse(path.read_text()), name)
        heavy[name] = sorted({i.split(".")[0] for i in imported} & HEAVY)
        edges = set()
        for i in imported:
            while i and i not in mods:
                i = i.rpartition(".")[0]
            if i and i != name:
                edges.add(i)
        deps[name] = edges
    return mods, deps, heavy


def test_the_board_side_never_reaches_tensorflow():
    mods, deps, heavy = _graph()
    runtime = [m for m in mods if m.startswith("edgecls.runtime")]
    assert len(runtime) > 10
    seen, todo, via = set(), list(runtime), {}
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for d in deps[m]:
            via.setdefault(d, m)
            todo.append(d)
    bad = {m: heavy[m] for m in seen if heavy[m]}
    assert not bad, {m: (libs, f"reached from {via.get(m)}") for m, libs in bad.items()}
    training = {m for m in seen if m.startswith(("edgecls.train", "edgecls.export"))}
    training |= {m for m in seen if m.startswith("edgecls.explain")}
    assert not training, f"runtime reaches the training side: {sorted(training)}"


def test_the_graph_sees_lazy_imports():
    """The check above must be able to fail: a function-level import counts."""
    tree = ast.parse("def f():\n    import tensorflow as tf\n    from keras import layers\n")
    assert {"tensorflow", "keras"} <= _imports(tree, "edgecls.runtime.x")


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node


def test_no_function_is_over_sixty_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in _functions()
        if node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, long


@pytest.mark.parametrize(
    "args,choices",
    [
        (["explain", "--help"], ["gradient", "partition"]),
        (["data", "sample", "--help"], ["casting", "insects"]),
        (["run", "--help"], ["litert", "onnxruntime"]),
    ],
)
def test_cli_help_lists_registry_choices(args, choices):
    from typer.testing import CliRunner

    from edgecls.cli import app

    out = CliRunner().invoke(app, args, env={"COLUMNS": "200"}).output
    for choice in choices:
        assert choice in out, (choice, out)


def test_unknown_names_list_the_choices(tmp_path):
    from edgecls.errors import EdgeclsError
    from edgecls.explain.methods import EXPLAINERS
    from edgecls.samples import SAMPLES

    for registry, name in ((EXPLAINERS, "lime"), (SAMPLES, "dogs")):
        with pytest.raises(EdgeclsError, match=f"'{name}' is not known: choose one of "):
            registry.get(name)
