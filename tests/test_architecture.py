"""The folder boundaries of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "servekit"
TRANSPORTS = ("http", "grpc", "ray")
# The serving internals a transport must not reach: it calls the data plane and the simple API.
SERVING_INTERNALS = ("servekit.serving.registry", "servekit.serving.entry", "servekit.serving.version",
                     "servekit.serving.polling", "servekit.serving.traffic")
# ray/deploy.py serves nothing: it reads the repository's model folders and their ray: config to
# plan one Ray deployment per model, so it may read the folder rules (entry), nothing more.
ALLOWED = {"ray/deploy.py": ("servekit.serving.entry",)}


def _modules(folder: str) -> list[Path]:
    return sorted(path for path in (PACKAGE / folder).rglob("*.py") if "generated" not in path.parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _attributes(path: Path) -> set[str]:
    return {node.attr for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Attribute)}


@pytest.mark.parametrize("folder", TRANSPORTS)
def test_transports_reach_neither_the_registry_nor_its_models(folder: str) -> None:
    modules = _modules(folder)
    assert modules
    for path in modules:
        allowed = ALLOWED.get(path.relative_to(PACKAGE).as_posix(), ())
        reached = {name for name in _imports(path)
                   if name.startswith(SERVING_INTERNALS) and not (allowed and name.startswith(allowed))}
        assert not reached, f"{path.relative_to(PACKAGE)} imports {sorted(reached)}"
        assert "registry" not in _attributes(path), f"{path.relative_to(PACKAGE)} touches a .registry"


@pytest.mark.parametrize("folder", ["serving", "management", "batching", "codecs", "runtimes", "cache",
                                    "observability"])
def test_the_core_folders_import_no_transport(folder: str) -> None:
    for path in _modules(folder):
        transports = {name for name in _imports(path)
                      if name.startswith(tuple(f"servekit.{t}" for t in TRANSPORTS))
                      and not name.startswith("servekit.grpc.generated")}
        assert not transports, f"{path.relative_to(PACKAGE)} imports {sorted(transports)}"


@pytest.mark.parametrize("folder", ["batching", "codecs", "cache", "observability"])
def test_pure_and_shared_folders_take_plain_values_not_loaded_models(folder: str) -> None:
    for path in _modules(folder):
        reached = {name for name in _imports(path) if name.startswith(("servekit.serving", "servekit.management"))}
        assert not reached, f"{path.relative_to(PACKAGE)} imports {sorted(reached)}"
