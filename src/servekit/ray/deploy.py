"""Build and run the Ray Serve application of a repository: one deployment per model, one ingress.

Ray is imported only inside these functions: it is the optional ``ray`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from servekit.errors import ServekitError
from servekit.serving.entry import model_folders, read_model_config

__all__ = ["APPLICATION_NAME", "build_application", "deploy"]

APPLICATION_NAME = "servekit"


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise ServekitError("Ray Serve is not installed: pip install 'servekit[ray]'") from None
    return serve


def build_application(repository: Path, names: list[str] | None = None) -> Any:
    """The Ray Serve application (unstarted) of ``names`` (default: every model) in ``repository``.

    Each model's ``ray:`` config block sets its replicas, autoscaling and CPUs. ``repository``
    is made absolute: every node that runs a replica must read it at that path.
    """
    root = repository.resolve()
    found = list(model_folders(root))
    chosen = found if names is None else names
    missing = sorted(set(chosen) - set(found))
    if missing:
        raise ServekitError(f"no model folder in {root} for: {', '.join(missing)}")
    if not chosen:
        raise ServekitError(f"model repository {root} holds no model")
    serve = _serve()  # after the checks: a wrong name is reported whether or not Ray is installed
    from servekit.ray.ingress import Ingress
    from servekit.ray.replica import ModelReplica

    handles = {}
    for name in chosen:
        options = read_model_config(root / name).ray.deployment_options()
        deployment = serve.deployment(ModelReplica).options(name=f"model-{name}", **options)
        handles[name] = deployment.bind(str(root), name)
    # The ingress only copies bytes: it reserves no CPU, so a small node still fits the models.
    ingress = serve.deployment(Ingress).options(name="ingress", ray_actor_options={"num_cpus": 0})
    return ingress.bind(handles)


def deploy(repository: Path, *, address: str = "auto", http_host: str = "127.0.0.1", http_port: int = 8000,
           route_prefix: str = "/", names: list[str] | None = None) -> None:
    """Connect to the Ray cluster at ``address``, start Serve's HTTP proxy on ``http_host:http_port``
    (when Serve is not running there yet) and run the application; return once every replica is
    up. The application outlives this call: ``serve shutdown`` or ``ray stop`` ends it."""
    serve = _serve()
    import ray

    application = build_application(repository, names)
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        serve.start(http_options={"host": http_host, "port": http_port})
        serve.run(application, name=APPLICATION_NAME, route_prefix=route_prefix)
    finally:
        ray.shutdown()
