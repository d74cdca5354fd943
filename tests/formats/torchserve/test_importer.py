"""The scoped import layer: ``ts`` and the archive's own modules exist only for archive code."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from servekit.formats.torchserve.importer import COMPAT_PACKAGE, PRIVATE_PREFIX, ArchiveImports


@pytest.fixture()
def scopes() -> Iterator[list[ArchiveImports]]:
    opened: list[ArchiveImports] = []
    yield opened
    for scope in opened:
        scope.close()


def open_scope(folder: Path, files: dict[str, str], scopes: list[ArchiveImports]) -> ArchiveImports:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    scope = ArchiveImports(folder)
    scope.open()
    scopes.append(scope)
    return scope


HANDLER = """
import ts
import ts.context
from ts.context import Context
from ts.utils.util import PredictionException

def lazy():
    from ts.utils.util import map_class_to_label
    import ts.metrics.dimension as dimension
    return map_class_to_label, dimension.Dimension
"""


def test_ts_resolves_to_servekits_layer_inside_the_archive_only(tmp_path: Path,
                                                                scopes: list[ArchiveImports]) -> None:
    scope = open_scope(tmp_path, {"handler.py": HANDLER}, scopes)
    module = scope.import_module("handler")
    assert module.ts.__name__ == COMPAT_PACKAGE
    assert module.Context.__module__ == f"{COMPAT_PACKAGE}.context"
    assert module.ts.context.Context is module.Context
    assert "ts" not in sys.modules and not any(name.startswith("ts.") for name in sys.modules)
    with pytest.raises(ModuleNotFoundError):
        import ts  # noqa: F401 - nothing named ts is installed in the test environment


def test_lazy_imports_in_handler_functions_resolve_later_and_on_other_threads(
        tmp_path: Path, scopes: list[ArchiveImports]) -> None:
    module = open_scope(tmp_path, {"handler.py": HANDLER}, scopes).import_module("handler")
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.extend(module.lazy()))
    worker.start()
    worker.join()
    mapper, dimension = found
    assert getattr(mapper, "__module__", None) == f"{COMPAT_PACKAGE}.utils.util"
    assert getattr(dimension, "__module__", None) == f"{COMPAT_PACKAGE}.metrics.dimension"
    assert "ts" not in sys.modules


def test_an_installed_ts_is_never_shadowed(tmp_path: Path, scopes: list[ArchiveImports],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "site"
    (installed / "ts").mkdir(parents=True)
    (installed / "ts" / "__init__.py").write_text("WHO = 'the installed ts'\n")
    (installed / "ts" / "context.py").write_text("class Context:\n    pass\n")
    monkeypatch.syspath_prepend(str(installed))
    try:
        before: ModuleType = importlib.import_module("ts")
        assert before.WHO == "the installed ts"
        module = open_scope(tmp_path / "archive", {"handler.py": HANDLER}, scopes).import_module("handler")
        assert module.Context.__module__ == f"{COMPAT_PACKAGE}.context"  # the handler: servekit's layer
        assert importlib.import_module("ts") is before  # everyone else: the installed one, untouched
        assert importlib.import_module("ts.context").__file__ == str(installed / "ts" / "context.py")
    finally:
        for name in [n for n in sys.modules if n == "ts" or n.startswith("ts.")]:
            del sys.modules[name]


def test_a_ts_module_servekit_lacks_fails_naming_it(tmp_path: Path, scopes: list[ArchiveImports]) -> None:
    scope = open_scope(tmp_path, {"vision.py": "from ts.torch_handler.image_classifier import ImageClassifier\n"},
                       scopes)
    with pytest.raises(ModuleNotFoundError, match=r"ts\.torch_handler\.image_classifier") as caught:
        scope.import_module("vision")
    assert caught.value.name == "ts.torch_handler.image_classifier"


def test_archives_keep_their_own_modules_apart(tmp_path: Path, scopes: list[ArchiveImports]) -> None:
    first = open_scope(tmp_path / "a", {"handler.py": "import model\nWHO = model.WHO\n",
                                        "model.py": "WHO = 'a'\n"}, scopes)
    second = open_scope(tmp_path / "b", {"handler.py": "from model import WHO\n", "model.py": "WHO = 'b'\n"}, scopes)
    assert first.import_module("handler").WHO == "a"
    assert second.import_module("handler").WHO == "b"
    assert "model" not in sys.modules and "handler" not in sys.modules


def test_the_archive_wins_over_an_installed_module_of_the_same_name(tmp_path: Path,
                                                                    scopes: list[ArchiveImports]) -> None:
    import yaml as installed_yaml

    scope = open_scope(tmp_path, {"handler.py": "import yaml\n", "yaml.py": "WHO = 'archive'\n"}, scopes)
    assert scope.import_module("handler").yaml.WHO == "archive"  # as on TorchServe's sys.path
    assert sys.modules["yaml"] is installed_yaml


def test_packages_of_the_archive_with_relative_imports(tmp_path: Path, scopes: list[ArchiveImports]) -> None:
    scope = open_scope(tmp_path, {
        "handler.py": "import helpers.tokens\nfrom helpers import split\n",
        "helpers/__init__.py": "from .tokens import split\n",
        "helpers/tokens.py": "from ts.utils.util import list_classes_from_module\n"
                             "def split(text):\n    return text.split()\n",
    }, scopes)
    module = scope.import_module("handler")
    assert module.split("a b") == ["a", "b"]
    assert module.helpers.tokens.list_classes_from_module.__module__ == f"{COMPAT_PACKAGE}.utils.util"


def test_loading_writes_nothing_into_the_archive_and_close_forgets_it(tmp_path: Path,
                                                                      scopes: list[ArchiveImports]) -> None:
    scope = open_scope(tmp_path, {"handler.py": "import model\n", "model.py": "X = 1\n"}, scopes)
    scope.import_module("handler")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handler.py", "model.py"]  # no __pycache__
    assert any(name.startswith(scope.package) for name in sys.modules)
    scope.close()
    assert not any(name.startswith(PRIVATE_PREFIX) and name.startswith(scope.package) for name in sys.modules)
