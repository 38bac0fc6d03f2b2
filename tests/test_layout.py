"""The package layout: no import cycle, no kyam_lib import inside a function, no module over 600 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import kyam_lib

PACKAGE = Path(kyam_lib.__file__).parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("kyam_lib",) + path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The kyam_lib modules an import statement loads (a `from package import submodule` names the submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "kyam_lib"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "kyam_lib":
        return []
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    graph, nested = {}, []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        graph[module] = {target for node in tree.body for target in _imported(node, module, is_package, modules)
                         if target != module}
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for node in ast.walk(function):
                    if _imported(node, module, is_package, modules):
                        nested.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return graph, nested


def test_no_kyam_lib_import_inside_a_function():
    _, nested = _graph()
    assert nested == []


def test_module_graph_is_acyclic():
    graph, _ = _graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target in graph and target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_over_600_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_benchmark_harness_is_outside_the_package():
    assert not any(name in {"bench.py", "reference.py", "loader_bench.py"} for name in (p.name for p in PACKAGE.rglob("*.py")))


def test_method_modules_have_test_files_of_the_same_name():
    tests = Path(__file__).parent
    missing = [p.name for p in (PACKAGE / "method").glob("*.py")
               if p.name != "__init__.py" and not (tests / f"test_{p.name}").is_file()]
    assert missing == []
