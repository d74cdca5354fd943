"""The simple gRPC API (package ``modelserving``): PredictRequest rows and PredictResponse. Pure.

``features`` holds rows of the model's input width back to back. ``Predict`` and each
``PredictBidi`` request take exactly one row; ``PredictStream`` takes one or more. A
prediction travels as an int32 class: a model whose prediction is not an integer class
(a label string, a regression value) is reported, not truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from servekit.codecs.guard import decoder
from servekit.errors import InvalidInput
from servekit.grpc.generated import model_service_pb2 as pb
from servekit.types import SimplePrediction

__all__ = ["decode_rows", "encode_prediction"]

_INT32 = np.iinfo(np.int32)


@decoder("the PredictRequest")
def decode_rows(features: Sequence[float], width: int, *, single: bool) -> np.ndarray[Any, Any]:
    """``features`` as a 2-D FP32 array of ``width``-wide rows (width -1: the whole list is one row).

    With ``single`` the request must hold exactly one row. InvalidInput names the width.
    """
    count = len(features)
    if count == 0:
        raise InvalidInput("'features' is empty; send one row of the model's input width")
    if width <= 0:
        width = count
    if single and count != width:
        raise InvalidInput(f"'features' holds {count} values; this call takes exactly one row of {width}")
    if count % width:
        raise InvalidInput(f"'features' holds {count} values, not a whole number of rows of {width}")
    # features[:] is a plain list: numpy reads one far faster than protobuf's repeated container
    return np.array(features[:], dtype=np.float32).reshape(count // width, width)


def _as_class(model: str, value: Any) -> int:
    number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if not isinstance(number, int) or not _INT32.min <= number <= _INT32.max:
        raise InvalidInput(f"model {model!r} predicts {number!r}, which is not an int32 class; "
                           "the simple gRPC API carries class indices (use the inference service)")
    return number


def encode_prediction(model: str, result: SimplePrediction, row: int = 0) -> pb.PredictResponse:
    """The response for one row of ``result``; probabilities only when they were asked for."""
    response = pb.PredictResponse(
        prediction=_as_class(model, result.predictions.reshape(-1)[row]), latency_ms=result.latency_ms
    )
    if result.probabilities is not None:
        response.probabilities.extend(np.asarray(result.probabilities[row], dtype=np.float32).reshape(-1).tolist())
    return response
