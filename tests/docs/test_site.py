"""The docs site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``: every page in the nav,
no broken link or anchor; its generated references name every configuration key, server setting,
command and option the code has; and the README's links lead to pages that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

from servekit.cli import main
from servekit.config import ModelConfig, ServerSettings, environment_variable
from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[2]
DOCS_INSTALL = "pip install -e '.[docs]'"
BUILD_TIMEOUT_S = 300


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    for module in ("mkdocs", "material", "mkdocs_gen_files"):
        require_module(module, DOCS_INSTALL)
    # Without the banners mkdocs-material and a plugin print about MkDocs 2.0 (they are not warnings).
    environment = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                          env=environment)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", folder)
    assert done.returncode == 0, done.stderr
    return folder


def text_of(site: Path, page: str) -> str:
    """A built page's text without its tags, entities decoded."""
    return unescape(re.sub(r"<[^>]+>", "", (site / page / "index.html").read_text(encoding="utf-8")))


def model_keys(model: type[BaseModel]) -> set[str]:
    """Every key of a config model and of the models nested in it."""
    keys = set(model.model_fields)
    for field in model.model_fields.values():
        for candidate in [field.annotation, *_arguments(field.annotation)]:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys |= model_keys(candidate)
    return keys


def _arguments(annotation: object) -> list[object]:
    found: list[object] = []
    for argument in getattr(annotation, "__args__", ()):
        found += [argument, *_arguments(argument)]
    return found


def test_every_source_page_becomes_a_page_of_the_site(site: Path) -> None:
    sources = {path.relative_to(ROOT / "docs").with_suffix("") for path in (ROOT / "docs").rglob("*.md")}
    assert sources
    for source in sources:
        built = site / ("index.html" if source.name == "index" else source / "index.html")
        assert built.is_file(), source


def test_the_site_loads_nothing_from_the_network(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        external = re.findall(r'<(?:link|script)[^>]+(?:href|src)="(https?://[^"]+)"', page.read_text(encoding="utf-8"))
        assert not external, (page, external)


def test_the_configuration_reference_names_every_key_and_setting(site: Path) -> None:
    page = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    for key in model_keys(ModelConfig):
        assert f"<code>{key}</code>" in page, key
    for name in ServerSettings.model_fields:
        assert f"<code>{name}</code>" in page and f"<code>{environment_variable(name)}</code>" in page, name
    # Defaults and descriptions come from the models: a changed default changes the page.
    text = text_of(site, "reference/configuration")
    assert "67108864 (64 MiB)" in text and "4294967296 (4 GiB)" in text
    assert "requests waiting, at most" in text


def test_every_configuration_key_and_setting_says_what_it_does() -> None:
    """The reference's "what" column is the field's description: a key without one is a blank row."""
    models = {ModelConfig, ServerSettings}
    seen: set[type[BaseModel]] = set()
    blank = []
    while models:
        model = models.pop()
        seen.add(model)
        for name, field in model.model_fields.items():
            if not field.description:
                blank.append(f"{model.__name__}.{name}")
            for candidate in [field.annotation, *_arguments(field.annotation)]:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                    models.add(candidate)
    assert not blank, f"give these a Field(description=...) in src/servekit/config.py: {blank}"


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
    return found


def test_the_command_line_reference_lists_every_command_and_option(site: Path) -> None:
    text = text_of(site, "reference/cli")
    commands = _commands(main, "servekit")
    assert len(commands) >= 7
    for path, command in commands:
        section = text.split(f"{path}\N{PILCROW SIGN}", 1)[1]  # from the command's heading on
        assert f"Usage: {path} " in section, path
        for param in command.params:
            if isinstance(param, click.Option):
                for option in [*param.opts, *param.secondary_opts]:
                    assert option in section.split("Usage: ", 2)[1], (path, option)
    # What click's own --help says, defaults included (no unset marker leaks into the page).
    assert "[default: http]" in text and "UNSET" not in text


@pytest.mark.parametrize("fault", ["a page outside the nav", "a broken link", "a broken anchor"])
def test_a_fault_in_the_pages_fails_the_strict_build(fault: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    if fault == "a page outside the nav":
        (tmp_path / "docs" / "stray.md").write_text("# Stray\n")
    elif fault == "a broken link":
        with (tmp_path / "docs" / "batching.md").open("a") as page:
            page.write("\nSee [the missing page](missing.md).\n")
    else:
        with (tmp_path / "docs" / "batching.md").open("a") as page:
            page.write("\nSee [a missing section](isolation.md#no-such-section).\n")
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0, done.stderr
    assert re.search(r"stray\.md|missing\.md|no-such-section", done.stderr), done.stderr


def test_the_readme_links_lead_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert {"docs/index.md", "docs/own-model.md", "docs/reference/cli.md"} <= set(local)
    for link in local:
        assert (ROOT / link).is_file(), link
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for link in local:
        assert link.removeprefix("docs/") in nav, f"{link} is not in the nav of mkdocs.yml"
