"""The layer rules, checked by walking every import of the product's modules with ``ast`` (function-local
imports and TYPE_CHECKING blocks included):

- the kernel (``stacdrop/`` but ``stacdrop/app/``) imports no stage and no app module;
- a stage (``watcher``, ``processor``, ``publisher``) imports only the kernel and itself;
- the app reaches a stage only through what its package exports (``from processor import ...``);
- no modules import each other, directly or around a longer circle.

Run it alone: ``pytest tests/unit/kernel/test_layers.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STAGES = ("watcher", "processor", "publisher")
PACKAGES = ("stacdrop", *STAGES)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in module ``name``; ``from pkg import sub`` names
    ``pkg.sub`` when ``sub`` is a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] in PACKAGES]


def _layer(name: str) -> str:
    if name == "stacdrop.app" or name.startswith("stacdrop.app."):
        return "app"
    return name.split(".")[0] if name.split(".")[0] in STAGES else "kernel"


def test_the_kernel_imports_no_stage_and_no_app_module() -> None:
    wrong = [f"{name}:{line} imports {target}" for name in MODULES if _layer(name) == "kernel"
             for target, line in _imports(name) if _layer(target) != "kernel"]
    assert wrong == []


def test_a_stage_imports_only_the_kernel_and_itself() -> None:
    wrong = [f"{name}:{line} imports {target}" for name in MODULES if _layer(name) in STAGES
             for target, line in _imports(name) if _layer(target) not in ("kernel", _layer(name))]
    assert wrong == []


def test_the_app_uses_a_stage_only_through_its_package() -> None:
    wrong = [f"{name}:{line} imports {target}" for name in MODULES if _layer(name) == "app"
             for target, line in _imports(name) if _layer(target) in STAGES and target not in STAGES]
    assert wrong == []


def test_no_modules_import_each_other() -> None:
    graph = {name: {t for t, _ in _imports(name) if t in MODULES and t != name} for name in MODULES}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_walk_sees_imports() -> None:
    """The checks above must be able to fail: the walk finds a known stage import of the app."""
    assert "processor" in {target for target, _ in _imports("stacdrop.app.components")}
    assert "processor.store" in {target for target, _ in _imports("processor.stores")}
