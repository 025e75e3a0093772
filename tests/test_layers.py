"""The shape of the package, read from its source (nothing is imported or run): the layers of
the house, the board side never reaching TensorFlow, short functions, registries that list their
choices."""

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


# The layers, lowest first: a module imports its own layer and those below, never above; the
# board application and the workstation side stand side by side and never import each other.
LAYERS = (
    (
        "base",
        (
            "edgecls.errors",
            "edgecls.registry",
            "edgecls.schema",
            "edgecls.durable",
            "edgecls.logs",
            "edgecls.lazy",
            "edgecls.redact",
        ),
    ),
    ("bundle", ("edgecls.bundle",)),
    (
        "data",
        (
            "edgecls.folders",
            "edgecls.runs",
            "edgecls.samples",
            "edgecls.collected",
            "edgecls.pull",
            "edgecls.fleet",
            "edgecls.serve",
        ),
    ),
    ("board", ("edgecls.runtime",)),
    (
        "workstation",
        (
            "edgecls.train",
            "edgecls.anomaly",
            "edgecls.export",
            "edgecls.explain",
            "edgecls.evaluate",
            "edgecls.compare",
            "edgecls.keras_predictor",
            "edgecls.tf_compat",
        ),
    ),
    ("cli", ("edgecls.cli", "edgecls.__main__")),
)
SIDE_BY_SIDE = {"board", "workstation"}


def _layer(module: str) -> int:
    if module == "edgecls":
        return 0  # the package itself: version and quiet environment
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def layer_violations(deps: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, imported in deps.items():
        here = _layer(module)
        for d in imported:
            there = _layer(d)
            sideways = {LAYERS[here][0], LAYERS[there][0]} == SIDE_BY_SIDE
            if there > here or sideways:
                bad.append(f"{module} ({LAYERS[here][0]}) imports {d} ({LAYERS[there][0]})")
    return sorted(bad)


def test_every_module_imports_only_its_layer_and_those_below():
    _, deps, _ = _graph()
    assert {m for m in deps if m.startswith("edgecls.bundle.")}, "the bundle package is gone"
    assert not layer_violations(deps)


@pytest.mark.parametrize("upward", ["edgecls.train.fit", "edgecls.runtime.loop", "edgecls.cli"])
def test_the_layer_check_fails_when_the_bundle_imports_upwards(upward):
    """The check above can fail: a bundle module importing the training side, the board
    application or the command line is named."""
    _, deps, _ = _graph()
    deps = {**deps, "edgecls.bundle.manifest": deps["edgecls.bundle.manifest"] | {upward}}
    assert any(
        v.startswith(f"edgecls.bundle.manifest (bundle) imports {upward}")
        for v in layer_violations(deps)
    )


def test_the_board_and_the_workstation_never_import_each_other():
    _, deps, _ = _graph()
    deps = {**deps, "edgecls.export.onnx": deps["edgecls.export.onnx"] | {"edgecls.runtime.loop"}}
    assert layer_violations(deps) == [
        "edgecls.export.onnx (workstation) imports edgecls.runtime.loop (board)"
    ]


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
