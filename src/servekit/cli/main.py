"""``servekit serve``, ``servekit config`` and ``servekit demo`` (and the toolkit's commands,
registered from :mod:`servekit.cli.toolkit`). Every serve flag also reads SERVEKIT_<FLAG>
(``servekit.config.environment_variable``), named in its help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from servekit import __version__
from servekit.config import environment_variable

if TYPE_CHECKING:
    from servekit.config import ServerSettings
    from servekit.single_file import SingleModel

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servekit")
def main() -> None:
    """servekit: serve models over HTTP and gRPC (Open Inference Protocol and a simple API)."""


def _setting(*declarations: str, help: str, shown_default: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """A ``serve``/``config`` flag of a ServerSettings field; its help names the field's SERVEKIT_*
    variable (``servekit.config.environment_variable``) and ``shown_default``. The flag's own value
    defaults to None (not given): the variable, then the setting's default, apply."""
    option = click.option(*declarations, help=help, **kwargs)

    def decorate(command: F) -> F:
        option(command)
        param = command.__click_params__[-1]  # type: ignore[attr-defined]
        assert param.name is not None
        where = f"env {environment_variable(param.name)}" + (f"; default {shown_default}" if shown_default else "")
        param.help = f"{help} [{where}]"
        return command

    return decorate


_SERVER_OPTIONS: list[Callable[[Any], Any]] = [
    _setting("--host", help="Address to bind.", shown_default="127.0.0.1"),
    _setting("--http-port", type=int, help="HTTP port.", shown_default="8000"),
    _setting("--grpc-port", type=int, help="gRPC port; 0 = no gRPC.", shown_default="8001"),
    _setting("--metrics-port", type=int, help="Prometheus metrics port; 0 = none.", shown_default="8002"),
    _setting("--triton-metrics/--no-triton-metrics", default=None, help="Also write Triton's per-model metrics "
             "(nv_inference_request_success, nv_inference_count, nv_inference_*_duration_us, ...; labels model, "
             "version) on the metrics page, for Triton dashboards.", shown_default="off"),
    _setting("--triton-metrics-config", "triton_metrics_config", multiple=True, metavar="KEY=VALUE",
             help="Triton's --metrics-config for --triton-metrics: summary_latencies=true adds Triton's latency "
             "summaries (nv_inference_*_summary_us, quantiles over the last minute), "
             "summary_quantiles=Q:ERROR,... their quantiles; repeatable.", shown_default="no summaries"),
    _setting("--management-port", type=int, help="Management API port; 0 = none. Needs --workers 1.",
             shown_default="8003"),
    _setting("--workers", type=click.IntRange(min=1), help="Worker processes sharing the ports.",
             shown_default="1"),
    _setting("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log level.",
             shown_default="info"),
    _setting("--default-model", help="Model of the simple API (/predict) when there are several.",
             shown_default="the only model"),
    _setting("--max-request-bytes", type=int, help="Largest request body accepted.", shown_default="64 MiB"),
    _setting("--max-json-elements", type=click.IntRange(min=1), help="Most values one JSON request body may hold; "
             "larger tensors go in the binary tensor extension or gRPC.", shown_default="4,000,000"),
    _setting("--read-timeout", "read_timeout_s", type=click.FloatRange(min=0), help="Seconds a request may take "
             "to arrive whole before it gets 408; 0 = no limit.", shown_default="30"),
    _setting("--max-connections", type=click.IntRange(min=1), help="Open HTTP connections and requests in "
             "flight per worker; past it new requests get 503.", shown_default="2048"),
    _setting("--drain-idle-grace", "drain_idle_grace_s", type=click.FloatRange(min=0), help="After SIGTERM, "
             "seconds an idle HTTP connection stays open for a request already on its way; 0 = none.",
             shown_default="2"),
    _setting("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0), help="After SIGTERM, seconds "
             "for requests and calls in flight (HTTP and gRPC together) to finish.", shown_default="30"),
    _setting("--grpc-frontend", type=click.Choice(["auto", "native", "grpcio"]), help="What serves the gRPC "
             "port: native (HTTP/2 by nghttp2: several times grpcio's calls per second), grpcio, or auto.",
             shown_default="auto: native where its extension is installed, else grpcio"),
    _setting("--grpc-max-message-bytes", type=int, help="Largest gRPC message, received or sent.",
             shown_default="65 MiB: a 64 MiB tensor and the rest"),
    _setting("--access-log", type=click.Choice(["text", "json", "off"]), help="One line per inference request.",
             shown_default="as --log-format"),
    _setting("--log-format", type=click.Choice(["text", "json"]), help="servekit's, uvicorn's and grpc's log "
             "records: text lines or one JSON object per line.", shown_default="text, json with --access-log json"),
    _setting("--otel-endpoint", help="Send OpenTelemetry traces (OTLP/HTTP) to this URL, e.g. "
             "http://127.0.0.1:4318; needs servekit[otel].",
             shown_default="off, unless OTEL_EXPORTER_OTLP_ENDPOINT is set"),
    _setting("--cache-url", help="Response cache of models that enable it: memory:// or redis://HOST:PORT/DB.",
             shown_default="memory://"),
    _setting("--cache-max-bytes", type=click.IntRange(min=0), help="Bound of the memory cache, per worker.",
             shown_default="128 MiB"),
    _setting("--management-host", help="Management API address.", shown_default="127.0.0.1"),
    _setting("--management-token", help="Bearer token of the management API (better in the environment: flags "
             "show in ps).", shown_default="a fresh one per start, written to MODEL_STORE/.servekit/management-token"),
    _setting("--management-auth/--no-management-auth", default=None, help="Ask for the bearer token.",
             shown_default="on"),
    _setting("--repository-control", type=click.Choice(["token", "open", "off"]), help="Who may load and unload "
             "models through the OIP repository extension: holders of the management token, anyone, or nobody.",
             shown_default="token"),
    _setting("--model-store", type=click.Path(path_type=Path, file_okay=False), help="Where archives are read "
             "from and registered models unpacked.", shown_default="the repository"),
    _setting("--models", "models", multiple=True, help="Archives to serve from the start, as TorchServe's "
             "--models: NAME=FILE.mar, FILE.mar (named by its manifest) or all (every TorchServe archive in the "
             "model store); repeatable or comma-separated."),
    _setting("--allowed-url", "allowed_urls", multiple=True, help="Archive URLs the management API may fetch: an "
             "https://HOST/PATH/ or file:///FOLDER/ prefix, or a glob; repeatable or comma-separated.",
             shown_default="none: the model store only"),
    _setting("--max-archive-bytes", type=click.IntRange(min=1024), help="Largest archive, packed or unpacked.",
             shown_default="4 GiB"),
    _setting("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="PEM certificate (chain): "
             "every port (HTTP, gRPC, metrics, management) serves TLS; needs --tls-key."),
    _setting("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="PEM private key of --tls-cert."),
    _setting("--tls-ca", type=click.Path(path_type=Path, dir_okay=False), help="PEM CA bundle: every port asks "
             "clients for a certificate it signed (mutual TLS)."),
    _setting("--docs-site-url", help="Documentation site the status page (GET /) links to: an http(s) URL or a "
             "/path.", shown_default="no link"),
    _setting("--poll-interval", type=click.FloatRange(min=0), help="Rescan the repository every SECONDS, loading "
             "and unloading what changed; 0 = off.", shown_default="0"),
]


def _server_options(command: F) -> F:
    for option in reversed(_SERVER_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.argument("source", required=False, metavar="[REPOSITORY | MODEL_FILE | HANDLER.py[:Class]]")
@click.option("--name", help="Name of a single model file's model [the file's name up to its first dot]; "
              "command line only.")
@click.option("--max-batch-size", type=click.IntRange(min=0), help="Rows per batch of a single model file "
              "[32 when every input has a variable first dimension, else 0: no batching]; command line only.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:DATATYPE:DIMS", help="An input of a single model "
              "file, e.g. x:FP32:-1,4 (-1: any size); repeatable. Needed by TorchScript files and handlers, "
              "which cannot describe their tensors; command line only.")
@click.option("--output", "outputs", multiple=True, metavar="NAME:DATATYPE:DIMS", help="An output of a single "
              "model file, as --input; command line only.")
@_server_options
def serve(source: str | None, name: str | None, max_batch_size: int | None, inputs: tuple[str, ...],
          outputs: tuple[str, ...], **flags: Any) -> None:
    """Serve every model in REPOSITORY (default: ./models or SERVEKIT_REPOSITORY), and the archives
    of --models; or one model file (model.onnx, model.pt, model.pt2, model.skops) or custom handler
    (handler.py:MyHandler) as a one-model repository.

    Without a REPOSITORY, --model-store or --models serves as `torchserve --start --model-store
    STORE --models ...` does: the repository is then the model store itself, and only the --models
    archives (and those registered later) are served; the store's folders are not loaded at start.
    """
    from servekit.server import serve as run_server
    from servekit.single_file import is_single_model

    single = source is not None and is_single_model(source)
    if not single and (name is not None or max_batch_size is not None or inputs or outputs):
        raise click.UsageError("--name, --max-batch-size, --input and --output apply to a single model file "
                               "(servekit serve model.onnx), not to a repository")
    if not single:
        run_server(_checked(*_settings(flags, None if source is None else Path(source))))
        return
    assert source is not None
    from servekit.single_file import remove, write_repository

    repository = write_repository(_single_model(source, name, max_batch_size, inputs, outputs))
    try:
        run_server(_checked(*_settings(flags, repository)))
    finally:
        remove(repository)


def _single_model(source: str, name: str | None, max_batch_size: int | None, inputs: tuple[str, ...],
                  outputs: tuple[str, ...]) -> SingleModel:
    from servekit.errors import ConfigError
    from servekit.single_file import parse_tensor, single_model

    try:
        return single_model(source, name=name, max_batch_size=max_batch_size,
                            inputs=[parse_tensor(text) for text in inputs],
                            outputs=[parse_tensor(text) for text in outputs])
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None


def _settings(flags: dict[str, Any], repository: Path | None) -> tuple[ServerSettings, dict[str, str]]:
    """The settings of these flags and the environment, and where each came from; a bad value is a
    one-line UsageError naming its flag or SERVEKIT_* variable."""
    from pydantic import ValidationError

    from servekit.config import ServerSettings, environment_source

    given = {name: value for name, value in flags.items() if value is not None and value != ()}
    if repository is not None:
        given["repository"] = repository
    origins: dict[str, str] = {}
    for field in ServerSettings.model_fields:
        found = environment_source(field)
        if field in given:
            origins[field] = "argument" if field == "repository" else f"--{_flag(field)}"
        elif found is not None:
            origins[field] = f"env {found[0]}"
        else:
            origins[field] = "default"
    from_file = _mlserver_settings(given, origins)
    try:
        return ServerSettings(**given), origins
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            origin = origins.get(field, "")
            value = given.get(field) if field in given else (environment_source(field) or ("", ""))[1]
            where = f"{origin.removeprefix('env ')}={value!r}" if origin.startswith(("env", "--")) else field
            if field in from_file:
                where = f"{origin}: {field}={from_file[field]!r}"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise click.UsageError("; ".join(problems)) from None


def _mlserver_settings(given: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """Add to ``given`` what an MLServer settings.json at the repository's root sets and no flag or
    SERVEKIT_* variable does (servekit.formats.mlserver.server_settings); warn once for what it skips.
    Returns the fields it added."""
    from servekit.config import environment_source
    from servekit.errors import ConfigError
    from servekit.formats.mlserver.server_settings import read_server_settings

    found = environment_source("repository")
    root = Path(given.get("repository") or (found[1] if found is not None else "models"))
    try:
        read = read_server_settings(root)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    if read is None:
        return {}
    added = {name: value for name, value in read.fields.items() if origins[name] == "default"}
    given.update(added)
    origins.update({name: str(read.path) for name in added})
    if read.skipped:
        click.echo(f"servekit: {read.path}: skipped MLServer settings servekit does not read: "
                   f"{', '.join(read.skipped)}", err=True)
    for note in read.notes:
        click.echo(f"servekit: {read.path}: {note}", err=True)
    return added


def _flag(field: str) -> str:
    option = next((p for p in serve.params if p.name == field and isinstance(p, click.Option)), None)
    return option.opts[0].removeprefix("--") if option is not None else field.replace("_", "-")


def _checked(settings: ServerSettings, origins: dict[str, str]) -> ServerSettings:
    """The settings to serve with (TorchServe-style store serving settled, gRPC off where its extra
    is not installed and no one asked for it), or a UsageError."""
    from servekit.grpc.available import GRPC_HINT, grpc_installed

    if settings.grpc_port and not grpc_installed():
        if origins["grpc_port"] != "default":
            raise click.UsageError(f"{origins['grpc_port'].removeprefix('env ')}={settings.grpc_port}: serving gRPC "
                                   f"needs the grpc extra: {GRPC_HINT} (or 0: no gRPC)")
        click.echo(f"servekit: no gRPC: {GRPC_HINT} to serve it on port {settings.grpc_port}", err=True)
        settings = settings.model_copy(update={"grpc_port": 0})
    torchserve_style = bool(settings.models) or "model_store" in settings.model_fields_set
    if torchserve_style and "repository" not in settings.model_fields_set:
        store = settings.store
        load_models = settings.load_models if "load_models" in settings.model_fields_set else []
        settings = settings.model_copy(update={"repository": store, "model_store": store, "load_models": load_models})
        if not store.is_dir():
            raise click.UsageError(f"model store {store} is not a folder (give --model-store)")
    if settings.models:
        _check_archives(settings.models, settings.store)
    if not settings.repository.is_dir():
        raise click.UsageError(f"model repository {settings.repository} is not a folder (try: servekit demo)")
    if settings.workers > 1 and settings.management_port:
        # Each worker holds its own models: a change would reach one of them only.
        if "management_port" in settings.model_fields_set:
            raise click.UsageError("the management API needs --workers 1; with several workers use "
                                   "--management-port 0 and roll out versions on disk with --poll-interval")
        click.echo("servekit: the management API is off: it needs --workers 1", err=True)
    return settings


@main.command("config")
@click.argument("repository", required=False, type=click.Path(path_type=Path))
@_server_options
def show_config(repository: Path | None, **flags: Any) -> None:
    """Print the settings `servekit serve` would run with (these flags and the SERVEKIT_* environment),
    one per line, with where each came from: a flag, an environment variable, or the default."""
    settings, origins = _settings(flags, repository)
    values = settings.model_dump()
    width = max(len(name) for name in values)
    for name, value in values.items():
        shown = "(hidden)" if name == "management_token" and value is not None else _shown(value)
        click.echo(f"{name.ljust(width)}  {shown}  ({origins[name]})")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "(none)"
    return "(none)" if value is None else str(value)


def _check_archives(models: list[str], store: Path) -> None:
    """Refuse a --models value that is malformed or names a local archive that is not there."""
    from servekit.errors import InvalidInput
    from servekit.management.torchserve import model_specs

    try:
        specs = model_specs(models, store)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    for _, archive in specs:
        if "://" in archive and not archive.startswith("file://"):
            continue  # a URL: fetched (and checked against --allowed-url) at start
        path = Path(archive.removeprefix("file://"))
        if not (path if path.is_absolute() else store / path).exists():
            raise click.UsageError(f"--models: no archive {archive} in the model store {store}")


@main.command()
@click.argument("directory", required=False, default="models", type=click.Path(path_type=Path))
@click.option("--torch/--no-torch", "include_torch", default=None, help="Include the TorchScript version "
              "(default: when torch is installed).")
@click.option("--cache", is_flag=True, help="Turn the response cache on for digits (in memory, or where "
              "--cache-url / SERVEKIT_CACHE_URL says when served).")
def demo(directory: Path, include_torch: bool | None, cache: bool) -> None:
    """Write the demo model repository (a digits classifier in several runtimes) to DIRECTORY."""
    from servekit.demo import write_demo_repository

    names = write_demo_repository(directory, include_torch=include_torch, cache=cache)
    click.echo(f"wrote {len(names)} demo models to {directory}: {', '.join(names)}")
    click.echo(f"serve them with: servekit serve {directory}")


def _register_archive() -> None:
    from servekit.cli.archive import archive

    main.add_command(archive)


_register_archive()


def _register_toolkit() -> None:
    from servekit.cli.toolkit import advise, bench, convert

    for command in (convert, bench, advise):
        main.add_command(command)


_register_toolkit()


def _register_ray() -> None:
    # The command is always listed; Ray itself is imported only when it runs (extra: servekit[ray]).
    from servekit.cli.ray import ray

    main.add_command(ray)


_register_ray()
