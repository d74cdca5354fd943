"""The one exception tree of servekit.

Every error a client can see knows its HTTP status and its gRPC status code, so
each transport maps errors the same way and no transport decides on its own.
This module imports no web or RPC framework.

    ServekitError                   500 / INTERNAL
    ├── InvalidInput                400 / INVALID_ARGUMENT
    │   ├── InvalidSchema           422 / INVALID_ARGUMENT (a body of the wrong shape, simple API)
    │   └── PayloadTooLarge         413 / RESOURCE_EXHAUSTED
    ├── ModelNotFound               404 / NOT_FOUND
    │   └── VersionNotFound         404 / NOT_FOUND     (the model exists, that version does not)
    ├── ModelNotReady               503 / UNAVAILABLE
    ├── QueueFull                   503 / UNAVAILABLE   (+ Retry-After)
    ├── DeadlineExceeded            504 / DEADLINE_EXCEEDED
    ├── Unauthenticated             401 / UNAUTHENTICATED
    ├── PermissionDenied            403 / PERMISSION_DENIED
    ├── Conflict                    409 / ALREADY_EXISTS (a model or version already registered)
    ├── ModelFailed                 500 / INTERNAL      (the model raised; no traceback leaks)
    └── ConfigError                 raised while loading a repository, never per request
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "DeadlineExceeded",
    "InvalidInput",
    "InvalidSchema",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "PermissionDenied",
    "QueueFull",
    "ServekitError",
    "Unauthenticated",
    "VersionNotFound",
]


class ServekitError(Exception):
    """Base of every servekit error; ``message`` is safe to show a client."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Extra response headers the error asks for (e.g. Retry-After)."""
        return {}


class InvalidInput(ServekitError):
    """The request is malformed or does not match the model's signature."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class InvalidSchema(InvalidInput):
    """The body is valid JSON but not of the documented schema (FastAPI's 422)."""

    http_status = 422


class PayloadTooLarge(InvalidInput):
    """The request body is over the configured size limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class ModelNotFound(ServekitError):
    """No model, or no version of it, has the requested name."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class VersionNotFound(ModelNotFound):
    """The model exists but has no version of the requested number or label."""


class ModelNotReady(ServekitError):
    """The model exists but cannot serve now (loading, failed, unloading)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class QueueFull(ServekitError):
    """The model's batch queue is at its bound; the client should retry later."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class DeadlineExceeded(ServekitError):
    """The request's deadline passed before it could run; it never ran."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class Unauthenticated(ServekitError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class PermissionDenied(ServekitError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class Conflict(ServekitError):
    """The change collides with what exists: a model or version already registered, files that differ."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"


class ModelFailed(ServekitError):
    """The model raised while running a batch; only that batch's requests fail."""

    http_status = 500
    grpc_code = "INTERNAL"


class ConfigError(ServekitError):
    """A model folder or config file is invalid; the message names the file and field."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
