"""The package's layers, read from its imports (parsed, never imported).

    http  <-  streaming  <-  integrations  <-  server  ->  ops

``http/`` holds pure HTTP rules; ``streaming/`` what bounds time and memory for any stream;
``integrations/`` one module or package per content source; ``server/`` the Tornado wiring;
``ops/`` metrics, access log and status page, which the server feeds and which never reach
back into it (they may read an integration's settings). ``errors`` and ``config`` (with
``access_control`` and ``sql_statements``, the rules read straight from it) sit under all of
them (``config`` may use the pure ``http`` rules), and so does ``tornado_internals``, the one
module that touches Tornado's private attributes; ``cli`` and ``__main__`` stand on top. Every
import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency. The one name-based link is ``config.KINDS``, the integration registry,
which names each integration's modules as strings and imports them when a route needs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "mediaproxy"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

_BASE = {"package", "base"}
# Each layer, and the layers its modules may import besides their own.
ALLOWED: dict[str, set[str]] = {
    "package": set(),
    "base": {"package"},
    "http": _BASE,
    "config": _BASE | {"http"},
    "streaming": _BASE | {"http", "config"},
    "integrations": _BASE | {"http", "config", "streaming"},
    "ops": _BASE | {"http", "config", "streaming", "integrations"},
    "server": _BASE | {"http", "config", "streaming", "integrations", "ops"},
    "cli": _BASE | {"http", "config", "streaming", "integrations", "ops", "server"},
}
# What the operator configured and the rules read straight from it sit with config.
_TOP_LEVEL = {
    "__init__": "package",
    "errors": "base",
    "tornado_internals": "base",
    "config": "config",
    "access_control": "config",
    "sql_statements": "config",
    "cli": "cli",
    "__main__": "cli",
}


def module_name(path: Path) -> str:
    parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")[1:]
    if not parts:
        return "package"
    if len(parts) == 1 and (ROOT / f"{parts[0]}.py").exists():
        return _TOP_LEVEL.get(parts[0])
    return parts[0] if parts[0] in ALLOWED else None


def _resolve(name: str, modules: set[str]) -> str:
    """The module ``name`` names: itself, or the nearest package or module holding it."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def imports_in(source: str, this: str, package: str, modules: set[str]) -> set[str]:
    """The package's modules that ``source`` (module ``this`` in ``package``) imports,
    wherever in the file the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b``: b may be a module of its own, or a name inside a.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found.update(
            _resolve(name, modules)
            for name in names
            if name == PACKAGE or name.startswith(PACKAGE + ".")
        )
    found.discard(this)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in ROOT.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imports_in(path.read_text(encoding="utf-8"), name, package, set(paths))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_layer() -> None:
    assert [name for name in sorted(import_graph()) if layer_of(name) is None] == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_imports_point_down_the_layers() -> None:
    upward = []
    for name, targets in sorted(import_graph().items()):
        layer = layer_of(name)
        if layer is None:
            continue
        for target in sorted(targets):
            target_layer = layer_of(target)
            if (
                target_layer is not None
                and target_layer != layer
                and target_layer not in ALLOWED[layer]
            ):
                upward.append(f"{name} ({layer}) -> {target} ({target_layer})")
    assert upward == []


def test_the_walk_sees_lazy_relative_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mediaproxy.errors import NotFound\n"
        "def f() -> None:\n    from mediaproxy import config\n"
        "from .chunks import ChunkBudget\n"
        "from .. import http\n"
    )
    modules = {
        "mediaproxy",
        "mediaproxy.errors",
        "mediaproxy.config",
        "mediaproxy.http",
        "mediaproxy.streaming",
        "mediaproxy.streaming.chunks",
        "mediaproxy.streaming.probe",
    }
    assert imports_in(source, "mediaproxy.streaming.probe", "mediaproxy.streaming", modules) == {
        "mediaproxy.errors",
        "mediaproxy.config",
        "mediaproxy.http",
        "mediaproxy.streaming.chunks",
    }


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_tests_share_helpers_through_support_modules() -> None:
    """A test module imports no other test module, and the benchmarks import no test code:
    what both need lives in ``support`` modules, conftest, or the ``testbed`` package."""
    repo = ROOT.parent
    offending = []
    for path in sorted([*repo.glob("tests/**/*.py"), *repo.glob("bench/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module or ''}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            last_parts = {name.rpartition(".")[2] for name in names}
            from_bench = path.parts[-2] == "bench" and any(
                name == "tests" or name.startswith("tests.") for name in names
            )
            if from_bench or any(part.startswith("test_") for part in last_parts):
                offending.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert offending == []
