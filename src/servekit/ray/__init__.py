"""Ray Serve: every model of a repository as a Ray Serve deployment, on one machine or many.

``replica`` (one model, servekit's data plane inside a Ray actor) and ``ingress`` (the Open
Inference Protocol routes, forwarded to the model's replicas) import no Ray; ``deploy``
imports Ray when called, so ``servekit`` runs without the ``ray`` extra.
"""

from __future__ import annotations

from servekit.ray.deploy import build_application, deploy

__all__ = ["build_application", "deploy"]
