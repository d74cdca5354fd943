from __future__ import annotations

import numpy as np
import pytest

from servekit.codecs.protobuf_simple import decode_rows, encode_prediction
from servekit.errors import InvalidInput
from servekit.types import SimplePrediction


def test_rows_of_the_input_width() -> None:
    assert decode_rows([1, 2, 3, 4], 2, single=False).tolist() == [[1, 2], [3, 4]]
    assert decode_rows([1, 2], 2, single=True).dtype == np.float32
    assert decode_rows([1, 2, 3], -1, single=True).shape == (1, 3)  # any width: one row


@pytest.mark.parametrize(("features", "single", "message"), [
    ([], True, "'features' is empty"),
    ([1, 2, 3, 4], True, "exactly one row of 2"),
    ([1, 2, 3], False, "not a whole number of rows of 2"),
])
def test_wrong_widths_name_the_width(features: list[float], single: bool, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_rows(features, 2, single=single)


def test_prediction_and_probabilities_of_one_row() -> None:
    result = SimplePrediction(np.array([3, 1]), np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), 1.5)
    response = encode_prediction("m", result, row=1)
    assert response.prediction == 1 and list(response.probabilities) == pytest.approx([0.8, 0.2])
    assert response.latency_ms == 1.5
    assert encode_prediction("m", SimplePrediction(np.array([2.0]), None, 0.1)).prediction == 2
    assert list(encode_prediction("m", SimplePrediction(np.array([2]), None, 0.1)).probabilities) == []


@pytest.mark.parametrize("prediction", [np.array([0.37]), np.array([b"cat"], dtype=object), np.array([2**40])])
def test_predictions_that_are_not_int32_classes_are_reported(prediction: np.ndarray[object, object]) -> None:
    with pytest.raises(InvalidInput, match="not an int32 class"):
        encode_prediction("m", SimplePrediction(prediction, None, 0.1))
