"""``servekit ray deploy``: a repository's models onto a Ray cluster as Ray Serve deployments."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["ray"]


@click.group()
def ray() -> None:
    """Serve models on a Ray cluster (one machine or many) with Ray Serve [extra: servekit[ray]]."""


@ray.command()
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--address", default="auto", show_default=True, help="The Ray cluster: auto (the one `ray start` "
              "runs here), HOST:PORT of its head, or ray://HOST:10001.")
@click.option("--http-host", default="127.0.0.1", show_default=True, help="Address of Serve's HTTP proxy (0.0.0.0 "
              "on every node of a cluster).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port of Serve's HTTP proxy.")
@click.option("--route-prefix", default="/", show_default=True, help="Path the routes are served under.")
@click.option("--model", "models", multiple=True, help="Deploy only this model (repeatable) [every model].")
def deploy(repository: Path, address: str, http_host: str, http_port: int, route_prefix: str,
           models: tuple[str, ...]) -> None:
    """Deploy every model of REPOSITORY: one Ray Serve deployment each, replicas from its config's `ray:` block.

    REPOSITORY must be readable at the same path on every node that may run a replica.
    """
    from servekit.errors import ServekitError
    from servekit.ray import deploy as deploy_application

    try:
        deploy_application(repository, address=address, http_host=http_host, http_port=http_port,
                           route_prefix=route_prefix, names=list(models) or None)
    except ServekitError as exc:
        raise click.ClickException(exc.message) from None
    prefix = route_prefix.rstrip("/")
    click.echo(f"servekit: deployed on Ray Serve; Open Inference Protocol at http://{http_host}:{http_port}{prefix}/v2")
