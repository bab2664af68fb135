"""The house keeps its shape: no import cycles, layers import only downwards, exports complete.

Read from the source with ``ast`` (nothing is imported), so the checks are exact and fast. The
layer table is DESIGN.md's "Architecture": dependencies point one way.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "predwatch"

# Which of our layers each layer may import (lazily or not). A layer is the first component
# under ``predwatch`` (``predwatch.storage.sql`` is in ``storage``); modules at the package root
# are layers of their own. ``__init__`` (the lazy public face) is reachable from everywhere.
CORE = {"records", "errors", "config", "sampling", "sets", "scoring"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "records": {"errors"},
    "config": {"errors", "records"},
    "sampling": {"errors", "records", "config"},
    "scoring": {"errors", "records", "config"},
    "sets": {"errors", "records", "config", "sampling", "scoring"},
    "generation": CORE,
    "storage": CORE,
    "client": CORE,
    "analysis": CORE | {"storage"},
    "delivery": CORE | {"storage", "client"},
    "recording": CORE | {"generation", "delivery", "storage", "client", "repro"},
    "repro": CORE | {"generation", "recording", "storage", "client", "analysis"},
    "integrations": CORE | {"generation", "recording", "delivery", "storage", "repro"},
    # the config builder offers the demo's JSON schema as an example
    "server": CORE | {"storage", "analysis", "recording", "repro", "client", "demo"},
    "cli": CORE | {"storage", "analysis", "recording", "repro", "client", "delivery",
                   "server", "generation", "integrations", "demo"},
    "demo": CORE | {"generation", "recording", "delivery", "storage", "integrations"},
    "testing": CORE | {"generation", "recording", "delivery", "storage", "server", "client",
                       "cli"},
}
# Third-party packages only some layers may import.
HEAVY = {
    "torch": {"generation", "integrations", "repro", "demo", "testing", "recording"},
    "transformers": {"generation", "integrations", "repro", "demo", "testing", "recording"},
    "sqlalchemy": {"storage", "testing"},
    "alembic": {"storage"},
    "fastapi": {"server", "cli"},
    "starlette": {"server"},
    "uvicorn": {"server", "cli", "testing"},
    "jinja2": {"server"},
    "httpx": {"client", "delivery", "generation", "testing", "cli", "recording"},
}
# Layers whose *module-level* imports must stay light even where a lazy import is allowed:
# ``recording`` runs in every training process but may load torch only when it generates.
MODULE_LEVEL_LIGHT = {"recording": {"torch", "transformers"}}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (ours: full dotted name; third party: top-level name)
    lazy: bool  # inside a function (or class body), not at module level
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


MODULES = _modules()


def _imports(name: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.dump(child.test):
                continue  # annotations only: not a runtime dependency
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(name, alias.name, lazy, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    target = base + ("." + child.module if child.module else "")
                else:
                    target = child.module or ""
                found.append(Import(name, target, lazy, child.lineno))
                if target.startswith("predwatch"):
                    for alias in child.names:  # ``from predwatch.x import submodule``
                        if f"{target}.{alias.name}" in MODULES:
                            found.append(Import(name, f"{target}.{alias.name}", lazy,
                                                child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_there_are_no_import_cycles_among_our_modules() -> None:
    # Module-level edges only: a function-level import runs after every module has loaded.
    # Importing from one's own parent package (the re-export pattern) is not a cycle.
    edges = {
        name: {i.target for i in imports
               if not i.lazy and i.target in MODULES and i.target != name
               and not (MODULES[i.target].name == "__init__.py"
                        and name.startswith(i.target + "."))}
        for name, imports in IMPORTS.items()
    }
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_layers_import_only_the_layers_below_them() -> None:
    wrong = []
    for name, imports in IMPORTS.items():
        layer = _layer(name)
        if layer == "__init__":
            continue
        allowed = ALLOWED.get(layer)
        assert allowed is not None, f"{name}: layer {layer!r} is missing from the table"
        for i in imports:
            if not i.target.startswith("predwatch."):
                continue
            target = _layer(i.target)
            if target not in (layer, "__init__") and target not in allowed:
                wrong.append(f"{name}:{i.line} imports {i.target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_heavy_dependencies_stay_in_their_layers() -> None:
    wrong = []
    for name, imports in IMPORTS.items():
        layer = _layer(name)
        for i in imports:
            top = i.target.split(".")[0]
            if top in HEAVY and layer not in HEAVY[top]:
                wrong.append(f"{name}:{i.line} imports {i.target}")
            if not i.lazy and top in MODULE_LEVEL_LIGHT.get(layer, set()):
                wrong.append(f"{name}:{i.line} imports {i.target} at module level")
    assert not wrong, "\n".join(wrong)


def test_server_api_and_pages_never_import_each_other() -> None:
    api, pages = "predwatch.server.api", "predwatch.server.pages"
    wrong = [
        f"{name}:{i.line} imports {i.target}"
        for name, imports in IMPORTS.items() for i in imports
        if (name.startswith(api) and i.target.startswith(pages))
        or (name.startswith(pages) and i.target.startswith(api))
    ]
    assert not wrong, "\n".join(wrong)


def test_few_modules_sit_at_the_package_root() -> None:
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(root) <= 9, root
    assert set(root) <= {"records", "errors", "config", "client", "testing", "demo"}, root


@pytest.mark.parametrize("name", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_export_is_listed_in_all_and_resolves(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    # Names taken from the package's own submodules and not used there are its public face (the
    # re-export pattern); submodules imported for their side effects (registrations) are not.
    imported = {
        alias.asname or alias.name
        for node in tree.body if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith(name + ".")
        for alias in node.names
        if not (alias.asname or alias.name).startswith("_")
        and f"{node.module}.{alias.name}" not in MODULES
    }
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    imported -= used  # imported for the package's own code, not re-exported
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert not imported, f"{name} re-exports {sorted(imported)} but has no __all__"
        return
    missing = imported - set(exported) - {"__version__"}
    assert not missing, f"{name} imports {sorted(missing)} without listing them in __all__"
    for attr in exported:
        assert getattr(module, attr) is not None, f"{name}.{attr}"
