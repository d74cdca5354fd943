from __future__ import annotations

import numpy as np
import orjson
import pytest

from servekit.codecs.oip import decode_infer_request, encode_infer_response
from servekit.codecs.raw import array_to_bytes
from servekit.errors import InvalidInput
from servekit.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor


def body(*inputs: dict[str, object], **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def test_json_request_with_nested_or_flat_data() -> None:
    flat = {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}
    nested = {"name": "y", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
    request = decode_infer_request(body(flat, nested, id="r1"), "m", "2")
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r1")
    x, y = request.inputs
    assert x.data.dtype == np.float32 and x.data.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert y.data.dtype == np.int64 and y.shape == (2, 2)


def test_binary_extension_inputs_are_read_in_order() -> None:
    a = np.arange(3, dtype=np.int16)
    s = np.array([b"ab", b"c"], dtype=object)
    header = orjson.dumps({"inputs": [
        {"name": "a", "datatype": "INT16", "shape": [3], "parameters": {"binary_data_size": 6}},
        {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}},
    ]})
    request = decode_infer_request(header + array_to_bytes(a) + array_to_bytes(s), "m", None, len(header))
    assert request.inputs[0].data.tolist() == [0, 1, 2]
    assert request.inputs[1].data.tolist() == [b"ab", b"c"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}, "unknown datatype 'FP99'"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, "'shape' must be a list"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}, "needs 3 values"),
        ({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}]}, "not INT32"),
        ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}, "out of range for UINT8"),
        ({"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]}, "not BOOL"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}, "not FP32"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]}, "not a regular list"),
        ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}]}, "BYTES data must be strings"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, "neither 'data' nor"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}] * 2}, "more than once"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "id": 5}, "'id' must be"),
    ],
)
def test_bad_requests_name_the_problem(document: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(orjson.dumps(document), "m", None)


def test_binary_size_past_the_end_and_unclaimed_bytes_are_refused() -> None:
    header = orjson.dumps({"inputs": [{"name": "a", "datatype": "INT8", "shape": [4],
                                       "parameters": {"binary_data_size": 4}}]})
    with pytest.raises(InvalidInput, match="runs past the end"):
        decode_infer_request(header + b"\x00\x01", "m", None, len(header))
    with pytest.raises(InvalidInput, match="2 bytes of binary data no input claims"):
        decode_infer_request(header + b"\x00" * 6, "m", None, len(header))
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_infer_request(b"{nope", "m", None)


def _response() -> tuple[InferenceResponse, np.ndarray[object, object]]:
    probabilities = np.array([[0.25, 0.75]], dtype=np.float16)
    outputs = [Tensor.from_array("p", probabilities), Tensor.from_array("label", np.array(["cat"]))]
    return InferenceResponse("m", "1", outputs, id="r9"), probabilities


def test_json_response_is_flat_row_major_and_echoes_the_id() -> None:
    response, _ = _response()
    content, json_length = encode_infer_response(response, InferenceRequest("m", []))
    assert json_length is None
    document = orjson.loads(content)
    assert document["id"] == "r9" and document["model_version"] == "1"
    assert document["outputs"][0] == {"name": "p", "datatype": "FP16", "shape": [1, 2], "data": [0.25, 0.75]}
    assert document["outputs"][1]["data"] == ["cat"]


def test_binary_outputs_follow_the_json_header() -> None:
    response, probabilities = _response()
    request = InferenceRequest("m", [], outputs=[RequestedOutput("p", {"binary_data": True}), RequestedOutput("label")])
    content, json_length = encode_infer_response(response, request)
    assert json_length is not None
    header = orjson.loads(content[:json_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert "data" not in header["outputs"][0]
    assert np.frombuffer(content[json_length:], dtype=np.float16).tolist() == probabilities.ravel().tolist()
    everything = InferenceRequest("m", [], parameters={"binary_data_output": True})
    content, json_length = encode_infer_response(response, everything)
    assert json_length is not None and len(content) - json_length == 4 + 4 + 3
