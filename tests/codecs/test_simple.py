from __future__ import annotations

import numpy as np
import orjson
import pytest

from servekit.codecs.simple import decode_predict_request, encode_predict_response
from servekit.errors import InvalidInput, InvalidSchema
from servekit.types import SimplePrediction


def test_decode_rows_and_flag() -> None:
    rows, flag = decode_predict_request(b'{"inputs": [[1, 2.5], [3, 4]], "return_probabilities": true}')
    assert rows.dtype == np.float32 and rows.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert flag is True
    assert decode_predict_request(b'{"inputs": [[1]]}')[1] is False


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"nope", InvalidSchema),
        (b"[]", InvalidSchema),
        (b"{}", InvalidSchema),
        (b'{"inputs": "x"}', InvalidSchema),
        (b'{"inputs": [["a", "b"]]}', InvalidSchema),
        (b'{"inputs": [[1, 2], [3]]}', InvalidSchema),
        (b'{"inputs": [[1]], "return_probabilities": "yes"}', InvalidSchema),
        (b'{"inputs": [[1]], "extra": 1}', InvalidSchema),
        (b'{"inputs": [1, 2, 3]}', InvalidInput),
        (b'{"inputs": [[[1]]]}', InvalidInput),
        (b'{"inputs": []}', InvalidInput),
    ],
)
def test_schema_errors_are_422_and_rank_errors_400(raw: bytes, error: type[InvalidInput]) -> None:
    with pytest.raises(error) as caught:
        decode_predict_request(raw)
    assert caught.value.http_status == (422 if error is InvalidSchema else 400)


def test_encode_has_exactly_the_documented_fields() -> None:
    result = SimplePrediction(np.array([3, 1]), None, 1.23456)
    assert orjson.loads(encode_predict_response(result)) == {
        "predictions": [3, 1], "probabilities": None, "latency_ms": 1.2346}
    with_p = SimplePrediction(np.array([1]), np.array([[0.5, 0.5]], dtype=np.float32), 0.5)
    assert orjson.loads(encode_predict_response(with_p))["probabilities"] == [[0.5, 0.5]]
