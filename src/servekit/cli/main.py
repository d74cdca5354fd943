"""``servekit serve`` and ``servekit demo``. Every serve flag also reads SERVEKIT_<FLAG>."""

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
@click.option("--metrics-port", type=int, help="Metrics port [SERVEKIT_METRICS_PORT; 8002] (not yet served).")
@click.option("--management-port", type=int, help="Management port [SERVEKIT_MANAGEMENT_PORT; 8003] "
              "(not yet served).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes sharing the ports [SERVEKIT_WORKERS; 1].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="[SERVEKIT_LOG_LEVEL; info]")
@click.option("--default-model", help="Model of the simple API (/predict) when there are several.")
@click.option("--max-request-bytes", type=int, help="Largest request body accepted [64 MiB].")
@click.option("--grpc-max-message-bytes", type=int, help="Largest gRPC message, received or sent [65 MiB: a "
              "64 MiB tensor and the rest].")
def serve(repository: Path | None, **flags: Any) -> None:
    """Serve every model in REPOSITORY (default: ./models or SERVEKIT_REPOSITORY)."""
    from pydantic import ValidationError

    from servekit.config import ServerSettings
    from servekit.server import serve as run_server

    given = {name: value for name, value in flags.items() if value is not None}
    if repository is not None:
        given["repository"] = repository
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    if not settings.repository.is_dir():
        raise click.UsageError(f"model repository {settings.repository} is not a folder (try: servekit demo)")
    run_server(settings)


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
