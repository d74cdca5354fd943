"""Open Inference Protocol gRPC messages <-> servekit types. Pure: no I/O, no grpc.

Inputs come as typed ``contents`` or as ``raw_input_contents`` (one entry per input, in
input order, never mixed with contents). Outputs always go out as
``raw_output_contents``, as Triton answers: tritonclient.grpc reads numeric outputs only
from raw contents. Every malformed request is an InvalidInput naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
from google.protobuf import json_format

from servekit.codecs.guard import decoder
from servekit.codecs.raw import array_from_bytes, array_to_bytes, check_shape, element_count
from servekit.errors import InvalidInput
from servekit.grpc.generated import inference_pb2 as pb
from servekit.types import DATATYPES, InferenceRequest, InferenceResponse, ModelMetadata, RequestedOutput, Tensor

__all__ = [
    "CONTENTS_FIELDS",
    "decode_infer_request",
    "decode_parameters",
    "encode_infer_response",
    "encode_infer_response_bytes",
    "encode_model_config",
    "encode_model_metadata",
    "encode_model_statistics",
    "encode_parameters",
    "encode_repository_index",
]

# datatype -> the InferTensorContents field that carries it (FP16 has none: raw only)
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INT64_MAX = 2**63 - 1


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message)


def decode_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """An InferParameter map as plain Python values (unset parameters are left out)."""
    decoded: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            decoded[key] = getattr(parameter, choice)
    return decoded


def encode_parameters(values: Mapping[str, Any], into: MutableMapping[str, pb.InferParameter]) -> None:
    """Write plain values into an InferParameter map; anything not bool/int/float is sent as a string."""
    for key, value in values.items():
        parameter = into[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                parameter.uint64_param = value
            else:
                parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = str(value)


def _typed_array(tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    name, datatype = tensor.name, tensor.datatype
    check_shape(name, shape)
    field = CONTENTS_FIELDS.get(datatype)
    _require(field is not None, f"input {name!r}: {datatype} has no typed contents field; send raw_input_contents")
    assert field is not None
    given = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    stray = [other for other in given if other != field]
    _require(not stray, f"input {name!r}: {datatype} data goes in contents.{field}, not {', '.join(stray)}")
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    _require(len(values) == count, f"input {name!r}: shape {list(shape)} needs {count} values; contents hold "
                                   f"{len(values)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind in "bf" or dtype.itemsize == 8:  # the proto field has exactly this type
        return np.array(values, dtype=dtype).reshape(shape)
    wide = np.array(values, dtype=np.int64)  # int32/uint32 fields carry the narrower integer types
    info = np.iinfo(dtype)
    _require(wide.size == 0 or bool(wide.min() >= info.min and wide.max() <= info.max),
             f"input {name!r}: a value is out of range for {datatype}")
    return wide.astype(dtype).reshape(shape)


@decoder("the ModelInferRequest")
def decode_infer_request(message: pb.ModelInferRequest) -> InferenceRequest:
    """A ModelInferRequest as an InferenceRequest (numeric raw inputs are zero-copy, read-only).

    Every check is a plain test; its message is built only for a request that fails it (this
    runs once per call, and formatting the messages cost more than the checks)."""
    if not message.model_name:
        raise InvalidInput("model_name is required")
    tensors = message.inputs
    if not tensors:
        raise InvalidInput("'inputs' must not be empty")
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(tensors):
            raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; give one per "
                               "input")
        if any(t.HasField("contents") for t in tensors):
            raise InvalidInput("an input carries contents while raw_input_contents is used; use one or the other")
    inputs: list[Tensor] = []
    names: set[str] = set()
    for position, tensor in enumerate(tensors):
        name, datatype = tensor.name, tensor.datatype
        if not name:
            raise InvalidInput(f"inputs[{position}]: 'name' must not be empty")
        if datatype not in DATATYPES:
            raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}")
        shape = tuple(tensor.shape)
        # array_from_bytes checks the shape itself; typed contents are checked here
        array = array_from_bytes(name, datatype, shape, raw[position]) if raw else _typed_array(tensor, shape)
        parameters = decode_parameters(tensor.parameters) if tensor.parameters else {}
        inputs.append(Tensor(name, datatype, shape, array, parameters))
        names.add(name)
    if len(names) != len(inputs):
        raise InvalidInput("an input name appears more than once")
    outputs: list[RequestedOutput] | None = None
    if message.outputs:
        outputs = []
        for requested in message.outputs:
            parameters = decode_parameters(requested.parameters)
            _require("classification" not in parameters, "the classification extension is not supported")
            outputs.append(RequestedOutput(requested.name, parameters))
    return InferenceRequest(
        model_name=message.model_name,
        model_version=message.model_version or None,
        id=message.id or None,
        inputs=inputs,
        outputs=outputs,
        parameters=decode_parameters(message.parameters) if message.parameters else {},
    )


def encode_infer_response(response: InferenceResponse) -> pb.ModelInferResponse:
    """Outputs as raw contents, in output order; the request id is echoed."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    encode_parameters(response.parameters, message.parameters)
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        encode_parameters(tensor.parameters, output.parameters)
        message.raw_output_contents.append(array_to_bytes(tensor.data))
    return message


def encode_infer_response_bytes(response: InferenceResponse) -> bytes:
    """``encode_infer_response(response).SerializeToString()``, written without building the
    message: a response's fixed parts (model name and version, each output's name, datatype and
    shape) are serialized once and reused, and the raw contents are appended as they are.

    A response that carries parameters (a protobuf map, whose order on the wire is the
    library's) goes through the message instead. The bytes parse to the same message either way.
    """
    outputs = response.outputs
    if response.parameters or any(tensor.parameters for tensor in outputs):
        return encode_infer_response(response).SerializeToString()
    parts = [_response_prefix(response.model_name, response.model_version)]
    if response.id:
        parts.append(_length_delimited(_ID, response.id.encode()))
    for tensor in outputs:
        parts.append(_output_header(tensor.name, tensor.datatype, tensor.shape))
    for tensor in outputs:
        raw = array_to_bytes(tensor.data)
        parts.append(_RAW_OUTPUT + _varint(len(raw)))
        parts.append(raw)
    return b"".join(parts)


# Wire tags (field number << 3 | 2, length-delimited) of ModelInferResponse's fields.
_MODEL_NAME, _MODEL_VERSION, _ID, _OUTPUT, _RAW_OUTPUT = b"\x0a", b"\x12", b"\x1a", b"\x2a", b"\x32"
# Serialized fixed parts, keyed by what they encode; cleared when full (names come from models,
# shapes from requests, so the number of distinct keys is bounded only by clients).
_PARTS_LIMIT = 4096
_prefixes: dict[tuple[str, str], bytes] = {}
_output_headers: dict[tuple[str, str, tuple[int, ...]], bytes] = {}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _response_prefix(model_name: str, model_version: str) -> bytes:
    key = (model_name, model_version)
    prefix = _prefixes.get(key)
    if prefix is None:
        prefix = b"".join(_length_delimited(tag, value.encode()) for tag, value in
                          ((_MODEL_NAME, model_name), (_MODEL_VERSION, model_version)) if value)
        if len(_prefixes) >= _PARTS_LIMIT:
            _prefixes.clear()
        _prefixes[key] = prefix
    return prefix


def _output_header(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    key = (name, datatype, shape)
    header = _output_headers.get(key)
    if header is None:
        tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
        header = _length_delimited(_OUTPUT, tensor.SerializeToString())
        if len(_output_headers) >= _PARTS_LIMIT:
            _output_headers.clear()
        _output_headers[key] = header
    return header


def encode_model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def specs(tensors: Any) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in tensors]

    return pb.ModelMetadataResponse(name=metadata.name, versions=metadata.versions, platform=metadata.platform,
                                    inputs=specs(metadata.inputs), outputs=specs(metadata.outputs))


# The three documents below are built once, for HTTP, by servekit.serving.triton and the
# registry; Triton's JSON field names are the proto field names, so they parse as they are.
# Fields the reduced protos lack are skipped rather than failing a client's call.


def encode_model_config(config: Mapping[str, Any]) -> pb.ModelConfigResponse:
    response = pb.ModelConfigResponse()
    json_format.ParseDict(config, response.config, ignore_unknown_fields=True)
    return response


def encode_model_statistics(statistics: Mapping[str, Any]) -> pb.ModelStatisticsResponse:
    return json_format.ParseDict(statistics, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)


def encode_repository_index(rows: list[dict[str, str]], ready_only: bool) -> pb.RepositoryIndexResponse:
    chosen = [row for row in rows if row.get("state") == "READY"] if ready_only else rows
    return json_format.ParseDict({"models": chosen}, pb.RepositoryIndexResponse(), ignore_unknown_fields=True)
