"""The package's architecture holds: layers import only downward, no import circles, and every third-party
package the code imports is declared in pyproject.toml (read from the source, nothing imported)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import pipeline_lib

SRC = Path(pipeline_lib.__file__).resolve().parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(("pipeline_lib", *parts))] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file, function-level ones included."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, node.lineno, id(node) in top_level))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return pipeline_lib.LAYERS[0]  # the package's own __init__: a docstring and the layer list
    return "cli" if parts[1] in ("cli", "__main__") else parts[1]


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, f in MODULES.items():
        for target, _, _ in _imports(m, f):
            if target in MODULES and target != m and not m.startswith(target + "."):
                edges[m].add(target)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_subpackage_is_a_declared_layer():
    top = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(pipeline_lib.LAYERS) - {"cli"}
    for layer in top:
        assert (SRC / layer / "__init__.py").read_text().lstrip().startswith('"""'), f"{layer}: no docstring"


def test_no_import_circle():
    assert _circles(_edges()) == []


def test_the_circle_check_finds_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(edges) == [["a", "b", "c"]]


def test_imports_run_downward_only():
    rank = {layer: i for i, layer in enumerate(pipeline_lib.LAYERS)}
    upward = []
    for m, f in MODULES.items():
        for target, line, _ in _imports(m, f):
            if target in MODULES and rank[_layer(target)] > rank[_layer(m)]:
                upward.append(f"{f.relative_to(SRC)}:{line}: {_layer(m)} imports {target} ({_layer(target)})")
    assert upward == []


def test_layer_order_is_stated_once_in_the_package_docstring():
    doc = pipeline_lib.__doc__
    positions = [doc.index(f"\n    {layer} ") for layer in pipeline_lib.LAYERS]
    assert positions == sorted(positions)


def _third_party() -> dict[str, bool]:
    """Top-level third-party import names -> imported at module level somewhere (else only inside functions)."""
    found: dict[str, bool] = {}
    for m, f in MODULES.items():
        for target, _, top in _imports(m, f):
            root = target.split(".")[0]
            if not root or root == "pipeline_lib" or root in sys.stdlib_module_names:
                continue
            found[root] = found.get(root, False) or top
    return found


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]

    def names(reqs):
        return {r.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
                .replace("_", "-") for r in reqs}

    extras = set().union(*(names(v) for v in project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), extras


def test_every_imported_package_is_declared():
    """A module-level import needs a base dependency (`pip install .` alone must import every module); a
    function-level import may come from an extra."""
    dists = metadata.packages_distributions()
    base, extras = _declared()
    missing = []
    for root, top in sorted(_third_party().items()):
        provided = {d.lower().replace("_", "-") for d in dists.get(root, [])}
        assert provided, f"{root} is imported but no installed distribution provides it"
        allowed = base if top else base | extras
        if not provided & allowed:
            missing.append(f"{root} (from {', '.join(sorted(provided))}; "
                           f"{'module level: needs [project.dependencies]' if top else 'needs a dependency or extra'})")
    assert missing == []


@pytest.mark.parametrize("package", ["timm", "PIL"])
def test_packages_that_arrived_only_through_others_are_declared(package):
    assert package in _third_party()
    base, _ = _declared()
    provided = {d.lower() for d in metadata.packages_distributions()[package]}
    assert provided & base


def test_the_raw_params_dict_stops_at_the_params_layer():
    """Below `params`, libraries take the values they use: no argument is the params dict, and nothing reads
    params.yaml's sections by key (`params["data"]`)."""
    rank = {layer: i for i, layer in enumerate(pipeline_lib.LAYERS)}
    found = []
    for m, f in MODULES.items():
        if rank[_layer(m)] >= rank["params"]:
            continue
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in node.args.args + node.args.kwonlyargs:
                    note = ast.unparse(arg.annotation) if arg.annotation else ""
                    if arg.arg == "params" and "list" not in note:
                        found.append(f"{f.relative_to(SRC)}:{node.lineno}: {node.name}(params: {note or '?'})")
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "params"
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
                found.append(f"{f.relative_to(SRC)}:{node.lineno}: params[{node.slice.value!r}]")
    assert found == []
