"""The layer rules, checked by walking every import of the product's modules with ``ast`` (function-local
imports and TYPE_CHECKING blocks included):

- the kernel (``stacdrop/`` but ``stacdrop/app/``) imports no stage and no app module;
- a stage (``watcher``, ``processor``, ``publisher``) imports only the kernel and itself;
- the app reaches a stage only through what its package exports (``from processor import ...``);
- no modules import each other, directly or around a longer circle;
- no module imports another module's private name (``from x import _name``): a shared thing gets a
  public name at its home.

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


def _package(name: str) -> str:
    """The package relative imports of module ``name`` start from."""
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` reads from, with a relative import resolved against ``package``."""
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    return base


def _imports(name: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in module ``name``; ``from pkg import sub`` names
    ``pkg.sub`` when ``sub`` is a module."""
    path = MODULES[name]
    package = _package(name)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] in PACKAGES]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports(source: str, name: str) -> list[str]:
    """``module:line imports target._name`` for every ``from target import _name`` in ``source`` (the text
    of module ``name``) where ``target`` is another product module, relative or absolute."""
    package = _package(name) if name in MODULES else name.rpartition(".")[0]
    wrong = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = _absolute(node, package)
        if base.split(".")[0] not in PACKAGES or base == name:
            continue
        wrong += [f"{name}:{node.lineno} imports {base}.{alias.name}" for alias in node.names
                  if _is_private(alias.name)]
    return wrong


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


def test_no_module_imports_a_private_name_of_another() -> None:
    wrong = [found for name, path in MODULES.items() for found in _private_imports(path.read_text(), name)]
    assert wrong == []


def test_the_private_name_check_sees_private_imports() -> None:
    """The check above must be able to fail: absolute and relative imports of a private name are found,
    public names, dunders, outside packages and a module's own name are not."""
    source = (
        "from __future__ import annotations\n"
        "from stacdrop.times import _parse, utcnow\n"
        "from .base import _Helper\n"
        "from .. import _registry\n"
        "from os import _exit\n"
        "from stacdrop.bus import open_bus as _open_bus\n"
        "from processor import __version__\n"
        "def f():\n"
        "    from publisher.sinks import _local\n"
    )
    assert _private_imports(source, "stacdrop.bus.example") == [
        "stacdrop.bus.example:2 imports stacdrop.times._parse",
        "stacdrop.bus.example:3 imports stacdrop.bus.base._Helper",
        "stacdrop.bus.example:4 imports stacdrop._registry",
        "stacdrop.bus.example:9 imports publisher.sinks._local",
    ]
