"""Property-based fuzz of every decode entry point: whatever the bytes or documents, decoding
either succeeds or raises InvalidInput (400 / INVALID_ARGUMENT); nothing else escapes.

Bounded (a few hundred examples each, no deadline: the machine is shared) and derandomized so a
failure replays; hypothesis prints the smallest failing example.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servekit.codecs.oip import decode_infer_request
from servekit.codecs.protobuf import decode_infer_request as decode_grpc_request
from servekit.codecs.protobuf_simple import decode_rows
from servekit.codecs.simple import decode_predict_request
from servekit.errors import InvalidInput
from servekit.grpc.generated import inference_pb2 as pb
from servekit.types import DATATYPES

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)
dimensions = st.integers(min_value=-3, max_value=2**63) | st.sampled_from([0, 1, 2, 4, 2**62])
shapes = st.lists(dimensions, max_size=70) | json_values
datatypes = st.sampled_from([*DATATYPES, "FP8", "", "fp32"]) | json_values
tensors = st.fixed_dictionaries(
    {"name": st.text(max_size=4) | json_values, "datatype": datatypes, "shape": shapes},
    optional={"data": json_values | st.lists(st.integers(min_value=-(2**65), max_value=2**65) | st.floats(),
                                             max_size=12),
              "parameters": json_values | st.fixed_dictionaries({"binary_data_size": st.integers(-2, 64)})},
)
documents = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={"outputs": json_values, "parameters": json_values, "id": json_values},
) | json_values


def _decodes_or_refuses(call: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(InvalidInput):  # refused, as it should be; anything else fails the test
        call(*args, **kwargs)


@FUZZ
@given(document=documents, tail=st.binary(max_size=64), header_length=st.none() | st.integers(-5, 400))
def test_oip_json_and_binary_bodies(document: Any, tail: bytes, header_length: int | None) -> None:
    body = json.dumps(document).encode() + tail
    _decodes_or_refuses(decode_infer_request, body, "m", None, header_length)


@FUZZ
@given(body=st.binary(max_size=256), header_length=st.none() | st.integers(-5, 300))
def test_oip_arbitrary_bytes(body: bytes, header_length: int | None) -> None:
    _decodes_or_refuses(decode_infer_request, body, "m", "1", header_length)


@FUZZ
@given(document=json_values | st.fixed_dictionaries(
    {"inputs": json_values}, optional={"return_probabilities": json_values}), tail=st.binary(max_size=8))
def test_simple_predict_bodies(document: Any, tail: bytes) -> None:
    _decodes_or_refuses(decode_predict_request, json.dumps(document).encode() + tail)


@FUZZ
@given(name=st.text(max_size=4), datatype=st.sampled_from([*DATATYPES, "X", ""]),
       shape=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=70),
       raw=st.lists(st.binary(max_size=40), max_size=3), use_contents=st.booleans(),
       values=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=10))
def test_grpc_model_infer_requests(name: str, datatype: str, shape: list[int], raw: list[bytes],
                                   use_contents: bool, values: list[int]) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    if use_contents:
        tensor.contents.int_contents.extend(values)
    message.raw_input_contents.extend(raw)
    _decodes_or_refuses(decode_grpc_request, message)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_grpc_bytes_that_parse_as_a_model_infer_request(raw: bytes) -> None:
    try:
        message = pb.ModelInferRequest.FromString(raw)
    except Exception:  # not a message at all: refused before decoding (servekit.grpc.rpc)
        return
    _decodes_or_refuses(decode_grpc_request, message)


@FUZZ
@given(features=st.lists(st.floats(width=32), max_size=20), width=st.integers(-2, 8), single=st.booleans())
def test_simple_grpc_rows(features: list[float], width: int, single: bool) -> None:
    _decodes_or_refuses(decode_rows, features, width, single=single)
