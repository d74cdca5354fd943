"""Open Inference Protocol (KServe V2) REST bodies, with Triton's binary tensor extension.

A request body is JSON, optionally followed by raw tensor bytes; then the
``Inference-Header-Content-Length`` header says where the JSON ends and each
binary input says its length in ``parameters.binary_data_size``, in input order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from servekit.codecs.guard import decoder
from servekit.codecs.raw import array_from_bytes, array_to_bytes, check_shape, element_count
from servekit.errors import InvalidInput
from servekit.types import DATATYPES, InferenceRequest, InferenceResponse, RequestedOutput, Tensor

__all__ = ["decode_infer_request", "encode_infer_response", "json_array"]


def _load_json(body: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message)


def _parse_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers")
    parsed = tuple(shape)
    check_shape(name, parsed)
    return parsed


def json_array(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray[Any, Any]:
    """Build an array from JSON ``data`` (flat or nested, row-major), checked against datatype and shape."""
    count = element_count(shape)
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: 'data' must be a list")
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=object).reshape(-1)
            if not all(isinstance(x, str) for x in flat):
                raise InvalidInput(f"input {name!r}: BYTES data must be strings")
            array = np.empty(flat.size, dtype=object)
            array[:] = [x.encode() for x in flat]
        else:
            parsed = np.asarray(data)
            if datatype == "UINT64" and parsed.dtype.kind == "f":
                parsed = _exact_uint64(parsed, data)
            array = _typed(name, datatype, parsed)
    except ValueError:
        raise InvalidInput(f"input {name!r}: 'data' is not a regular list of {datatype} values") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} values; 'data' holds {array.size}")
    return array.reshape(shape)


_UINT64_MAX = int(np.iinfo(np.uint64).max)


def _exact_uint64(parsed: np.ndarray[Any, Any], data: Any) -> np.ndarray[Any, Any]:
    """numpy reads ints above 2**63 mixed with smaller ones as float64, losing digits: reread them exactly."""
    exact = np.array(data, dtype=object)
    flat = exact.reshape(-1)
    if all(type(x) is int and 0 <= x <= _UINT64_MAX for x in flat):
        return exact.astype(np.uint64)
    return parsed  # floats or out-of-range values: _typed rejects them


def _typed(name: str, datatype: str, parsed: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype]
    kind = parsed.dtype.kind
    if parsed.size == 0:
        return parsed.astype(dtype)
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind]
    if kind not in allowed:
        raise InvalidInput(f"input {name!r}: 'data' holds values that are not {datatype}")
    if dtype.kind in "iu" and kind in "iu":
        info = np.iinfo(dtype)
        low, high = parsed.min(), parsed.max()
        if not (low >= info.min and high <= info.max):
            raise InvalidInput(f"input {name!r}: a value is out of range for {datatype}")
    return parsed.astype(dtype, copy=False)


@decoder("the request body")
def decode_infer_request(
    body: bytes,
    model_name: str,
    model_version: str | None,
    header_length: int | None = None,
) -> InferenceRequest:
    """Parse an infer request body; every problem is an InvalidInput naming the field."""
    if header_length is not None:
        if not (0 < header_length <= len(body)):
            raise InvalidInput("Inference-Header-Content-Length is larger than the body")
        view = memoryview(body)
        document, binary = _load_json(view[:header_length], "request header"), view[header_length:]
    else:
        document, binary = _load_json(body, "request body"), memoryview(b"")
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    raw_inputs = document.get("inputs")
    if not (isinstance(raw_inputs, list) and len(raw_inputs) > 0):
        raise InvalidInput("'inputs' must be a non-empty list")
    inputs: list[Tensor] = []
    offset = 0
    for position, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise InvalidInput(f"inputs[{position}] must be an object")
        name = raw.get("name")
        if not (isinstance(name, str) and name != ""):
            raise InvalidInput(f"inputs[{position}]: 'name' must be a non-empty string")
        datatype = raw.get("datatype")
        if not (isinstance(datatype, str) and datatype in DATATYPES):
            raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; expected one of "
                               f"{', '.join(DATATYPES)}")
        shape = _parse_shape(name, raw.get("shape"))
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"input {name!r}: 'parameters' must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not (isinstance(size, int) and size >= 0):
                raise InvalidInput(f"input {name!r}: binary_data_size must be an integer")
            if offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size runs past the end of the body")
            array = array_from_bytes(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            if "data" not in raw:
                raise InvalidInput(f"input {name!r}: has neither 'data' nor parameters.binary_data_size")
            array = json_array(name, datatype, shape, raw["data"])
        inputs.append(Tensor(name, datatype, shape, array, parameters))
    if offset != len(binary):
        raise InvalidInput(f"the body has {len(binary) - offset} bytes of binary data no input claims")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise InvalidInput("an input name appears more than once")
    request_parameters = document.get("parameters") or {}
    if not isinstance(request_parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    request_id = document.get("id")
    if not (request_id is None or isinstance(request_id, str)):
        raise InvalidInput("'id' must be a string")
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        inputs=inputs,
        outputs=_parse_outputs(document.get("outputs")),
        parameters=request_parameters,
    )


def _parse_outputs(raw_outputs: Any) -> list[RequestedOutput] | None:
    if raw_outputs is None:
        return None
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for position, raw in enumerate(raw_outputs):
        if not (isinstance(raw, dict) and isinstance(raw.get("name"), str)):
            raise InvalidInput(f"outputs[{position}] needs a 'name'")
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"output {raw['name']!r}: 'parameters' must be an object")
        if not ("classification" not in parameters):
            raise InvalidInput("the classification extension is not supported")
        outputs.append(RequestedOutput(raw["name"], parameters))
    return outputs


def _wants_binary(request: InferenceRequest, name: str) -> bool:
    for requested in request.outputs or ():
        if requested.name == name and "binary_data" in requested.parameters:
            return bool(requested.parameters["binary_data"])
    return bool(request.parameters.get("binary_data_output", False))


def _json_data(array: np.ndarray[Any, Any]) -> Any:
    flat = array.reshape(-1)
    if flat.dtype.kind in ("O", "S", "U"):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    if flat.dtype.kind == "f" and flat.dtype.itemsize == 2:
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat)


def encode_infer_response(response: InferenceResponse, request: InferenceRequest) -> tuple[bytes, int | None]:
    """JSON body (plus binary tail); the int is the JSON length when a binary tail follows."""
    outputs: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if _wants_binary(request, tensor.name):
            raw = array_to_bytes(tensor.data)
            entry["parameters"] = {**tensor.parameters, "binary_data_size": len(raw)}
            tail.append(raw)
        else:
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
            entry["data"] = _json_data(tensor.data)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tail:
        return header, None
    return b"".join([header, *tail]), len(header)
