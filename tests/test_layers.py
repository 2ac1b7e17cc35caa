"""The package shows its architecture: layers that import only downward, and no cycle.

The import graph is built from the source with ``ast``, counting every import, those
inside functions included, so that nothing can dodge a cycle by importing late.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mxopt"

#: The layers, lowest first: a module may import its own layer and those below it.
LAYERS = ["core", "kernels", "schedules", "optimizers", "persist", "training", "distributed",
          "integrations", "cli"]  # fmt: skip

#: Size limits (the step-engine issue): lines per module, lines per class.
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 350


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: pathlib.Path, known: set) -> set:
    """The mxopt modules ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from package import module" imports the module; "from module import name"
            # imports the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict:
    table = modules()
    known = set(table)
    return {name: imported_modules(name, path, known) for name, path in table.items()}


def find_cycle(graph: dict) -> list | None:
    """One import cycle of ``graph`` as a list of modules, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_of(name: str) -> float | None:
    parts = name.split(".")
    if name == "mxopt":
        return LAYERS.index("cli") - 0.5  # the public API: every layer but the command line
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None  # __main__ and the mxopt.thinc alias sit above everything
    return LAYERS.index(parts[1])


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_only_downward():
    wrong = []
    for name, targets in import_graph().items():
        own = layer_of(name)
        if own is None:
            continue
        for target in targets:
            layer = layer_of(target)
            if layer is None or layer > own:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))


def test_the_root_only_re_exports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        allowed = (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)
        assert isinstance(node, allowed), f"mxopt/__init__.py line {node.lineno}: not a re-export"
        if isinstance(node, ast.Assign):
            assert [t.id for t in node.targets] == ["__all__"], node.lineno


def test_every_layer_is_a_folder():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS)
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "thinc.py"}, loose


def test_modules_and_classes_stay_small():
    too_long = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"class {name}.{node.name}: {size} lines")
    assert not too_long, "\n".join(too_long)


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_function_level_imports_are_counted(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from mxopt.training import updater\n    import mxopt.core.state\n"
    )
    found = imported_modules("mxopt.kernels.x", source, set(modules()))
    assert found == {"mxopt.training.updater", "mxopt.core.state"}
