"""The references of the docs site, written at build time (mkdocs-gen-files runs this script on
every ``mkdocs build``), so they cannot drift from the code:

- reference/configuration.md: every key of ``config.yaml`` (ModelConfig and its parts) and every
  server setting (ServerSettings, with its ``servekit serve`` flag and SERVEKIT_* variable), read
  from the pydantic models in src/servekit/config.py and the click options of ``servekit serve``;
- reference/cli.md: after its hand-written synopsis, every command of ``servekit`` with its usage
  line and options, as click itself renders them for ``--help``.

(mkdocs-click renders click 8.3's unset defaults as ``Sentinel.UNSET``; click's own help records
do not.)"""

from __future__ import annotations

import inspect
import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import annotated_types
import click
import mkdocs_gen_files
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from servekit.cli.main import main, serve
from servekit.config import ModelConfig, ServerSettings, environment_variable

CONFIGURATION_PAGE = "reference/configuration.md"
CLI_PAGE = "reference/cli.md"


def _anchor(path: str) -> str:
    """The heading id of a nested model's section: ``batching`` for ModelConfig.batching."""
    return path.replace(".", "-").replace("[]", "")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (directly, in a list, or optional), if any."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _nested_model(argument)
        if found is not None:
            return found
    return None


def _type_name(annotation: Any, links: dict[type[BaseModel], str]) -> str:
    """How a field's type reads in YAML terms: ``int``, ``list of int``, ``"a" | "b"``, a link to a section."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in arguments)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(argument, links) for argument in arguments if argument is not type(None)]
        return " \\| ".join(named) + (" \\| `null`" if type(None) in arguments else "")
    if origin is typing.Annotated:
        return _type_name(arguments[0], links)
    if origin is list:
        return f"list of {_type_name(arguments[0], links)}"
    if origin is dict:
        return f"mapping {_type_name(arguments[0], links)} → {_type_name(arguments[1], links)}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{links[annotation]})" if annotation in links else annotation.__name__
    if annotation is Any:
        return "any"
    if annotation is Path:
        return "path"
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    """The numeric constraints pydantic enforces on a field: ``≥ 0``, ``1 to 64``."""
    found = {}
    for constraint in field.metadata:
        for kind, attribute, symbol in ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
                                        (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<")):
            if isinstance(constraint, kind):
                found[symbol] = getattr(constraint, attribute)
    return ", ".join(f"{symbol} {value}" for symbol, value in found.items())


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return str(value)


def _default(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(its own section)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    text = f"`{_yaml_value(value)}`"
    if name.endswith("_bytes") and isinstance(value, int) and value >= 1024:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % size == 0:
                return f"{text} ({value // size} {unit})"
    return text


def _prose(text: str) -> str:
    """Plain text as Markdown that shows it as written: no HTML tags, no attribute lists."""
    return text.replace("<", "&lt;").replace("{", "\\{").replace("}", "\\}")


def _cell(text: str) -> str:
    return _prose(" ".join(text.split())).replace("|", "\\|")


def _holds_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(_holds_list(arg) for arg in typing.get_args(annotation))


def _model_sections(model: type[BaseModel], paths: list[str], title: str) -> list[str]:
    """A table of ``model``'s keys under a heading, then one section per model nested in it.
    ``paths`` are where the model sits in the file (``inputs[]``, ``outputs[]``); [] for the top."""
    nested: dict[type[BaseModel], list[str]] = {}
    for name, field in model.model_fields.items():
        inner = _nested_model(field.annotation)
        if inner is not None:
            suffix = "[]" if _holds_list(field.annotation) else ""
            nested.setdefault(inner, []).extend(f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
                                                for path in paths or [""])
    links = {inner: _anchor(inner_paths[0]) for inner, inner_paths in nested.items()}
    anchor = _anchor(paths[0]) if paths else "model-configuration"
    lines = [f"## {title} {{#{anchor}}}", ""]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        lines += [_prose(inspect.cleandoc(model.__doc__)), ""]
    lines += ["| key | type | default | what |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = _type_name(field.annotation, links)
        bounds = _bounds(field)
        kind += f" ({bounds})" if bounds else ""
        lines.append(f"| `{name}` | {kind} | {_default(name, field)} | {_cell(field.description or '')} |")
    lines.append("")
    for inner, inner_paths in nested.items():
        lines += _model_sections(inner, inner_paths, ", ".join(f"`{path}`" for path in inner_paths))
    return lines


def _serve_parameters() -> dict[str, click.Parameter]:
    """``servekit serve``'s flags and argument by the setting they set."""
    return {param.name: param for param in serve.params if param.name}


def _flag(parameter: click.Parameter | None) -> str:
    if isinstance(parameter, click.Option):
        return " / ".join(f"`{opt}`" for opt in [*parameter.opts, *parameter.secondary_opts])
    if isinstance(parameter, click.Argument):
        return f"`{parameter.human_readable_name}` (argument)"
    return "—"


def server_settings_section() -> list[str]:
    """Every ServerSettings field with its flag of ``servekit serve`` (where it has one) and variable."""
    parameters = _serve_parameters()
    lines = [
        "## Server settings {#server-settings}",
        "",
        _prose(inspect.cleandoc(ServerSettings.__doc__ or "")),
        "A flag wins over its variable; a setting without a flag is set by its variable alone.",
        "",
        "| setting | flag | environment | type | default | what |",
        "|---|---|---|---|---|---|",
    ]
    for name, field in ServerSettings.model_fields.items():
        parameter = parameters.get(name)
        flag = _flag(parameter)
        # A flag's help ends with its variable and default in brackets: the table has columns for them.
        helped = parameter.help if isinstance(parameter, click.Option) and parameter.help else ""
        what = field.description or re.sub(r"\s*\[[^]]*\]", "", helped)
        kind = _type_name(field.annotation, {})
        bounds = _bounds(field)
        kind += f" ({bounds})" if bounds else ""
        lines.append(f"| `{name}` | {flag} | `{environment_variable(name)}` | {kind} | {_default(name, field)} | "
                     f"{_cell(what)} |")
    return [*lines, ""]


def configuration_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the configuration models in `src/servekit/config.py` each time the site is built.",
        "A model's `config.yaml` (every key optional; an unknown key is an error that names it) is described",
        "with an example in [Model repository](../model-repository.md); nested keys are written as YAML",
        "mappings (`batching: {max_queue_delay_ms: 5}`).",
        "",
        *_model_sections(ModelConfig, [], "Model configuration: `config.yaml`"),
        *server_settings_section(),
    ]
    return "\n".join(lines)


def _command_sections(command: click.Command, parent: click.Context | None, name: str) -> list[str]:
    """``command``'s help, usage and options, then its subcommands' (a group's), as ``--help`` shows them."""
    context = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    path = context.command_path
    lines = [f"### `{path}` {{#{path.replace(' ', '-')}}}", ""]
    if command.help:
        lines += [_prose(inspect.cleandoc(command.help)), ""]
    lines += ["```text", context.get_usage(), "```", ""]
    records = [param.get_help_record(context) for param in command.get_params(context)
               if isinstance(param, click.Option)]
    lines += ["| option | what |", "|---|---|"]
    # A pipe inside a code span does not split a table cell (``--protocol [http|simple|grpc]``).
    lines += [f"| `{option}` | {_cell(what)} |" for option, what in filter(None, records)]
    lines.append("")
    if isinstance(command, click.Group):
        for sub_name, sub in sorted(command.commands.items()):
            lines += _command_sections(sub, context, sub_name)
    return lines


def cli_reference() -> str:
    lines = [
        "",
        "## Every command and option",
        "",
        "Generated from the `servekit` command itself (its click commands in `src/servekit/cli/`) each",
        "time the site is built: what `servekit COMMAND --help` prints.",
        "",
    ]
    lines += _command_sections(main, None, "servekit")
    return "\n".join(lines)


with mkdocs_gen_files.open(CONFIGURATION_PAGE, "w") as page:
    page.write(configuration_reference())
mkdocs_gen_files.set_edit_path(CONFIGURATION_PAGE, "gen_reference.py")
with mkdocs_gen_files.open(CLI_PAGE, "a") as page:
    page.write(cli_reference())
