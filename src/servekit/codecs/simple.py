"""The simple JSON API: ``POST /predict`` and ``GET /health`` bodies.

Request ``{"inputs": [[...], ...], "return_probabilities": bool}``; response
``{"predictions": [...], "probabilities": [[...]] | null, "latency_ms": float}``.
A body of the wrong schema is InvalidSchema (422); rows of the wrong rank are
InvalidInput (400).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from servekit.codecs.guard import decoder
from servekit.errors import InvalidInput, InvalidSchema
from servekit.types import SimplePrediction

__all__ = ["decode_predict_request", "encode_predict_response"]


@decoder("the request body")
def decode_predict_request(body: bytes) -> tuple[np.ndarray[Any, Any], bool]:
    """The rows as a 2-D FP32 array, and whether probabilities were asked for."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidSchema(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidSchema("body must be a JSON object with an 'inputs' field")
    unknown = set(document) - {"inputs", "return_probabilities"}
    if unknown:
        raise InvalidSchema(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "inputs" not in document:
        raise InvalidSchema("field 'inputs' is required")
    inputs = document["inputs"]
    if not isinstance(inputs, list):
        raise InvalidSchema("field 'inputs' must be a list of rows (a list of lists of numbers)")
    flag = document.get("return_probabilities", False)
    if not isinstance(flag, bool):
        raise InvalidSchema("field 'return_probabilities' must be true or false")
    try:
        parsed = np.asarray(inputs)
    except (ValueError, TypeError):
        raise InvalidSchema("field 'inputs' must hold numbers in rows of equal length") from None
    if parsed.dtype.kind not in "iuf" and parsed.size > 0:
        raise InvalidSchema("field 'inputs' must hold only numbers, in rows of equal length")
    if parsed.ndim != 2 or parsed.shape[0] == 0:
        raise InvalidInput(f"'inputs' must be a non-empty list of rows (rank 2); got rank {parsed.ndim}")
    with np.errstate(over="ignore"):
        rows = parsed.astype(np.float32, copy=False)
    if rows.size and not np.isfinite(rows).all():
        raise InvalidInput("'inputs' holds a value that is not a finite FP32 number")
    return rows, flag


def encode_predict_response(result: SimplePrediction) -> bytes:
    predictions = result.predictions
    if predictions.dtype.kind in ("O", "S", "U"):
        predictions_json: Any = [x.decode() if isinstance(x, bytes) else str(x) for x in predictions.reshape(-1)]
    else:
        predictions_json = np.ascontiguousarray(predictions.reshape(-1))
    probabilities = None if result.probabilities is None else np.ascontiguousarray(result.probabilities)
    return orjson.dumps(
        {"predictions": predictions_json, "probabilities": probabilities, "latency_ms": round(result.latency_ms, 4)},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
