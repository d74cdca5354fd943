"""``servekit serve`` and ``servekit demo`` (and the toolkit's commands, registered from
:mod:`servekit.cli.toolkit`). Every serve flag also reads SERVEKIT_<FLAG>."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from servekit import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servekit")
def main() -> None:
    """servekit: serve models over HTTP and gRPC (Open Inference Protocol and a simple API)."""


@main.command()
@click.argument("repository", required=False, type=click.Path(path_type=Path))
@click.option("--host", help="Address to bind [env SERVEKIT_HOST; default 127.0.0.1].")
@click.option("--http-port", type=int, help="HTTP port [SERVEKIT_HTTP_PORT; 8000].")
@click.option("--grpc-port", type=int, help="gRPC port [SERVEKIT_GRPC_PORT; 8001]; 0 = no gRPC.")
@click.option("--metrics-port", type=int, help="Prometheus metrics port [SERVEKIT_METRICS_PORT; 8002]; 0 = none.")
@click.option("--management-port", type=int, help="Management API port [SERVEKIT_MANAGEMENT_PORT; 8003]; 0 = "
              "none. Needs --workers 1.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes sharing the ports [SERVEKIT_WORKERS; 1].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="[SERVEKIT_LOG_LEVEL; info]")
@click.option("--default-model", help="Model of the simple API (/predict) when there are several.")
@click.option("--max-request-bytes", type=int, help="Largest request body accepted [64 MiB].")
@click.option("--max-json-elements", type=click.IntRange(min=1), help="Most values one JSON request body may hold "
              "[4,000,000]; larger tensors go in the binary tensor extension or gRPC.")
@click.option("--read-timeout", "read_timeout_s", type=click.FloatRange(min=0), help="Seconds a request may take "
              "to arrive whole before it gets 408 [SERVEKIT_READ_TIMEOUT_S; 30]; 0 = no limit.")
@click.option("--max-connections", type=click.IntRange(min=1), help="Open HTTP connections and requests in "
              "flight per worker; past it new requests get 503 [SERVEKIT_MAX_CONNECTIONS; 2048].")
@click.option("--drain-idle-grace", "drain_idle_grace_s", type=click.FloatRange(min=0), help="After SIGTERM, "
              "seconds an idle HTTP connection stays open for a request already on its way [2]; 0 = none.")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0), help="After SIGTERM, seconds "
              "for requests and calls in flight (HTTP and gRPC together) to finish [SERVEKIT_DRAIN_TIMEOUT_S; 30].")
@click.option("--grpc-max-message-bytes", type=int, help="Largest gRPC message, received or sent [65 MiB: a "
              "64 MiB tensor and the rest].")
@click.option("--access-log", type=click.Choice(["text", "json", "off"]), help="One line per inference request "
              "[SERVEKIT_ACCESS_LOG; as --log-format].")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="servekit's, uvicorn's and grpc's log "
              "records: text lines or one JSON object per line [SERVEKIT_LOG_FORMAT; text, json with "
              "--access-log json].")
@click.option("--otel-endpoint", help="Send OpenTelemetry traces (OTLP/HTTP) to this URL, e.g. "
              "http://127.0.0.1:4318 [SERVEKIT_OTEL_ENDPOINT; off, unless OTEL_EXPORTER_OTLP_ENDPOINT is set]; "
              "needs servekit[otel].")
@click.option("--cache-url", help="Response cache of models that enable it: memory:// or redis://HOST:PORT/DB "
              "[SERVEKIT_CACHE_URL; memory://].")
@click.option("--cache-max-bytes", type=click.IntRange(min=0), help="Bound of the memory cache, per worker "
              "[128 MiB].")
@click.option("--management-host", help="Management API address [SERVEKIT_MANAGEMENT_HOST; 127.0.0.1].")
@click.option("--management-token", help="Bearer token of the management API [SERVEKIT_MANAGEMENT_TOKEN, better: "
              "flags show in ps; default: a fresh one per start, written to MODEL_STORE/.servekit/management-token].")
@click.option("--management-auth/--no-management-auth", default=None, help="Ask for the bearer token [on].")
@click.option("--repository-control", type=click.Choice(["token", "open", "off"]), help="Who may load and unload "
              "models through the OIP repository extension: holders of the management token, anyone, or nobody "
              "[SERVEKIT_REPOSITORY_CONTROL; token].")
@click.option("--model-store", type=click.Path(path_type=Path, file_okay=False), help="Where archives are read "
              "from and registered models unpacked [SERVEKIT_MODEL_STORE; the repository].")
@click.option("--models", "models", multiple=True, help="Archives to serve from the start, as TorchServe's "
              "--models: NAME=FILE.mar, FILE.mar (named by its manifest) or all (every TorchServe archive in the "
              "model store); repeatable or comma-separated [SERVEKIT_MODELS].")
@click.option("--allowed-url", "allowed_urls", multiple=True, help="Archive URLs the management API may fetch: an "
              "https://HOST/PATH/ or file:///FOLDER/ prefix, or a glob (repeatable) [none: the model store only].")
@click.option("--max-archive-bytes", type=click.IntRange(min=1024), help="Largest archive, packed or unpacked "
              "[4 GiB].")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="PEM certificate (chain): "
              "every port (HTTP, gRPC, metrics, management) serves TLS [SERVEKIT_TLS_CERT]; needs --tls-key.")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="PEM private key of --tls-cert "
              "[SERVEKIT_TLS_KEY].")
@click.option("--tls-ca", type=click.Path(path_type=Path, dir_okay=False), help="PEM CA bundle: every port asks "
              "clients for a certificate it signed (mutual TLS) [SERVEKIT_TLS_CA].")
@click.option("--poll-interval", type=click.FloatRange(min=0), help="Rescan the repository every SECONDS, loading "
              "and unloading what changed [SERVEKIT_POLL_INTERVAL; 0 = off].")
def serve(repository: Path | None, **flags: Any) -> None:
    """Serve every model in REPOSITORY (default: ./models or SERVEKIT_REPOSITORY), and the archives
    of --models.

    Without a REPOSITORY, --model-store or --models serves as `torchserve --start --model-store
    STORE --models ...` does: the repository is then the model store itself, and only the --models
    archives (and those registered later) are served; the store's folders are not loaded at start.
    """
    from pydantic import ValidationError

    from servekit.config import ServerSettings
    from servekit.server import serve as run_server

    given = {name: value for name, value in flags.items() if value is not None and value != ()}
    if repository is not None:
        given["repository"] = repository
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
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
    run_server(settings)


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
def demo(directory: Path, include_torch: bool | None) -> None:
    """Write the demo model repository (a digits classifier in several runtimes) to DIRECTORY."""
    from servekit.demo import write_demo_repository

    names = write_demo_repository(directory, include_torch=include_torch)
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
