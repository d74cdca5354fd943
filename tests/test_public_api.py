from __future__ import annotations

import servekit
from servekit import errors


def test_public_api_is_pinned() -> None:
    assert sorted(servekit.__all__) == ["BaseHandler", "HandlerContext", "__version__", "serve"]
    assert callable(servekit.serve)


def test_every_client_error_maps_to_a_4xx_and_a_grpc_code() -> None:
    table = {
        errors.InvalidInput: (400, "INVALID_ARGUMENT"),
        errors.InvalidSchema: (422, "INVALID_ARGUMENT"),
        errors.PayloadTooLarge: (413, "RESOURCE_EXHAUSTED"),
        errors.ModelNotFound: (404, "NOT_FOUND"),
        errors.ModelNotReady: (503, "UNAVAILABLE"),
        errors.QueueFull: (503, "UNAVAILABLE"),
        errors.DeadlineExceeded: (504, "DEADLINE_EXCEEDED"),
        errors.Unauthenticated: (401, "UNAUTHENTICATED"),
        errors.PermissionDenied: (403, "PERMISSION_DENIED"),
        errors.ModelFailed: (500, "INTERNAL"),
        errors.Conflict: (409, "ALREADY_EXISTS"),
    }
    for error_class, (status, code) in table.items():
        assert (error_class.http_status, error_class.grpc_code) == (status, code), error_class
