"""The house, checked from the source: imports go one way, rooms keep their jobs, public names stay put.

The import graph is built from every `import` statement in the three source trees, function-local ones included
(a lazy import that hides a cycle is still a cycle). Module names follow setup.py's package_dir mapping.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE_TREES = {"tfx_ext": "tfx_ext", "layers": "tfx_ext.layers", "federated": "tfx_ext.federated"}
APPLICATION = ("tfx_ext.apps", "tfx_ext.__main__")
# What layers/ may import from the rest of the project: the streaming contract, errors, validators, internals.
LAYERS_MAY_IMPORT = ("tfx_ext.layers", "tfx_ext.streaming.contract", "tfx_ext.errors", "tfx_ext._validate",
                     "tfx_ext._compat", "tfx_ext.data.feature_config")
MAX_FUNCTION_LINES = 150
MAX_SIMULATE_LINES = 100


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for directory, package in SOURCE_TREES.items():
        for path in sorted((ROOT / directory).rglob("*.py")):
            parts = path.relative_to(ROOT / directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _is_application(name: str) -> bool:
    return any(name == app or name.startswith(app + ".") for app in APPLICATION)


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: pathlib.Path) -> set[str]:
    """Project modules that `module` imports anywhere in its source (module level or inside functions)."""
    targets = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import submodule` depends on the submodule; `from module import name` on the module.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "tfx_ext":
                target = _resolve(name)
                if target and target != module:
                    targets.add(target)
    return targets


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_import_graph_is_built_from_all_three_trees():
    assert {"tfx_ext", "tfx_ext.layers", "tfx_ext.federated", "tfx_ext.streaming.contract"} <= set(MODULES)
    assert "tfx_ext.streaming.contract" in GRAPH["tfx_ext.layers.stream"]  # a module-level import is seen
    assert len(MODULES) > 60


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_library_never_imports_the_application():
    offending = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if not _is_application(module)
        for target in targets if _is_application(target)
    )
    assert offending == []


def test_layers_depend_only_on_the_streaming_contract_and_errors():
    offending = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if module.startswith("tfx_ext.layers")
        for target in targets if not target.startswith(LAYERS_MAY_IMPORT)
    )
    assert offending == []


def _functions(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_library_function_is_longer_than_150_lines():
    long = sorted(
        f"{module}.{name}: {lines} lines"
        for module, path in MODULES.items() if not _is_application(module)
        for name, lines in _functions(path) if lines > MAX_FUNCTION_LINES
    )
    assert long == []


def test_simulate_is_a_short_loop():
    (lines,) = [n for name, n in _functions(MODULES["tfx_ext.federated.simulation"]) if name == "simulate"]
    assert lines <= MAX_SIMULATE_LINES


def test_no_class_reassignment():
    offending = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Attribute) and t.attr == "__class__" for t in targets):
                    offending.append(f"{module}:{node.lineno}")
    assert offending == []


PUBLIC_PACKAGES = ("tfx_ext", "tfx_ext.layers", "tfx_ext.federated", "tfx_ext.streaming", "tfx_ext.lite",
                   "tfx_ext.transforms", "tfx_ext.data", "tfx_ext.distribute", "tfx_ext.models")


def test_no_public_name_is_shadowed_by_a_submodule():
    """`from tfx_ext.x.verify import ...` would replace a public function `verify` by the module of that name."""
    clashes = []
    for package in PUBLIC_PACKAGES:
        exported = set(importlib.import_module(package).__all__)
        children = {m.rpartition(".")[2] for m in MODULES if m.rpartition(".")[0] == package}
        clashes += [f"{package}.{name}" for name in sorted(exported & children)
                    if not isinstance(getattr(importlib.import_module(package), name), type(importlib))]
    assert clashes == []


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_public_names_survive_importing_every_submodule(package):
    module = importlib.import_module(package)
    before = {name: getattr(module, name) for name in module.__all__}
    for info in pkgutil.walk_packages(module.__path__, prefix=package + ".") if hasattr(module, "__path__") else []:
        if not _is_application(info.name):
            importlib.import_module(info.name)
    after = {name: getattr(module, name) for name in module.__all__}
    changed = sorted(name for name in before if after[name] is not before[name])
    assert changed == []


_DESCRIBE_PUBLIC_NAMES = """
import importlib, json, pkgutil, sys
first = sys.argv[1] == "submodules-first"
if first:
    import tfx_ext
    for info in pkgutil.walk_packages(tfx_ext.__path__, prefix="tfx_ext."):
        if not info.name.startswith(("tfx_ext.apps", "tfx_ext.__main__")):
            importlib.import_module(info.name)
import tfx_ext
print(json.dumps({name: [type(getattr(tfx_ext, name)).__name__, getattr(getattr(tfx_ext, name), "__module__", None),
                         getattr(getattr(tfx_ext, name), "__qualname__", None)] for name in tfx_ext.__all__}))
"""


def test_public_names_do_not_depend_on_import_order(tmp_path):
    """In a fresh interpreter, importing every submodule before using `tfx_ext` leaves each public name as it is in
    one that only ran `import tfx_ext` (a user's `from tfx_ext.x.verify import ...` once replaced `tfx_ext.verify`)."""
    import json
    import subprocess
    import sys

    def describe(order):
        result = subprocess.run([sys.executable, "-c", _DESCRIBE_PUBLIC_NAMES, order], capture_output=True, text=True,
                                cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    plain, submodules_first = describe("plain"), describe("submodules-first")
    assert plain == submodules_first
    assert plain["verify"][0] == "function" and plain["to_streaming"][0] == "function"
