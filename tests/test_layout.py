"""The layout docs/architecture.md describes: rooms whose imports point one way, no import cycles.

Every import statement counts, including those inside functions (the ones under
``TYPE_CHECKING`` aside); the CLI may import anything and nothing imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT

PACKAGE = ROOT / "net"
# Each room imports only rooms to its right (docs/architecture.md).
ORDER = ["__main__", "cli/", "__init__", "defaults/", "api", "peer", "events/", "discovery/", "calls/",
         "serving/", "threads/", "transport/", "config", "wire/", "errors"]
SIBLINGS = {frozenset({"calls/", "serving/"})}      # neither imports the other
MAX_MODULES_PER_ROOM = 12


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of net that ``path`` imports at run time (any depth of the file)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for branch in ast.walk(tree)
                   if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
                   for node in ast.walk(branch)}
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "net")
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "net":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1] + "/" if (PACKAGE / parts[1]).is_dir() else parts[1]


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def test_rooms_import_only_the_rooms_below_them():
    wrong = []
    for module, imported in _graph().items():
        for target in imported:
            source, destination = _room(module), _room(target)
            if source == destination or source == "cli/":
                continue
            if frozenset({source, destination}) in SIBLINGS or ORDER.index(destination) < ORDER.index(source):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_outside_the_cli():
    graph = {module: {t for t in targets if not t.startswith("net.cli")}
             for module, targets in _graph().items() if not module.startswith("net.cli")}
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_function_level_imports_only_in_the_cli_or_for_an_optional_dependency():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and "optional" not in lines[node.lineno - 1]:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "function-level imports without an 'optional dependency' comment: " + ", ".join(found)


def test_no_room_holds_more_than_about_a_dozen_modules():
    for folder in [PACKAGE, *(p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())]:
        modules = [p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
        assert len(modules) <= MAX_MODULES_PER_ROOM, f"{folder.relative_to(ROOT)}: {len(modules)} modules"
