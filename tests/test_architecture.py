"""The house: every import in flowlib, those inside functions included, goes down a floor or
stays inside its own folder, and no modules import each other in a loop.

The floors are declared once, in ``flowlib.FLOORS``; a folder or top-level module missing from
them fails here, so a new one has to be given its place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flowlib

LIB = Path(flowlib.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


MODULES = _modules()


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """Every flowlib module ``module`` imports, at any depth of its code."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module, path.name == "__init__.py")
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]       # `import flowlib.a.b.c` names a module or its parent
            if name in MODULES and name != module and name.startswith("flowlib"):
                found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def unit_of(module: str) -> str:
    """The floor-plan unit: the folder right under flowlib, or a top-level module's name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flowlib"


def floor_of(module: str) -> int:
    if module == "flowlib" or module.endswith(".__main__"):
        return len(flowlib.FLOORS)              # the front door and the entry points: the top
    unit = unit_of(module)
    for floor, units in enumerate(flowlib.FLOORS):
        if unit in units:
            return floor
    raise AssertionError(f"{module}: its unit {unit!r} has no floor in flowlib.FLOORS")


def test_every_unit_has_a_floor():
    for module in MODULES:
        floor_of(module)


def test_no_import_goes_up_or_sideways():
    bad = []
    for module, targets in GRAPH.items():
        for target in targets:
            if unit_of(target) == unit_of(module) and floor_of(module) != len(flowlib.FLOORS):
                continue                          # inside its own folder (loops: the test below)
            if floor_of(target) >= floor_of(module) and not (module == "flowlib" and target == "flowlib"):
                bad.append(f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})")
    assert not bad, "imports that do not go down a floor:\n" + "\n".join(sorted(bad))


def test_no_import_loops():
    """Depth-first search for a cycle among modules (function-level imports count)."""
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import loops:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The parser is what the tests above rest on: an import inside a function counts."""
    source = "def f():\n    from flowlib.core import model\n    import flowlib.env\n"
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names.add(f"{node.module}.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            names.add(node.names[0].name)
    assert names == {"flowlib.core.model", "flowlib.env"}
    assert "flowlib.store.limits" in GRAPH["flowlib.train.distributed"]   # a real module-level edge


def test_the_model_knows_nothing_of_torchrun_or_the_store():
    """flowlib.core is torch only: no process group, no run store, no study."""
    for module, path in MODULES.items():
        if unit_of(module) != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("torch.distributed") for n in names), module
        assert not {unit_of(t) for t in GRAPH[module]} - {"core", "settings", "config", "env", "size", "fileio", "zipdir", "machine"}, module
