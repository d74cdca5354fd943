from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from servekit.codecs import protobuf as codec
from servekit.codecs.raw import array_to_bytes
from servekit.errors import InvalidInput
from servekit.grpc.generated import inference_pb2 as pb
from servekit.grpc.generated import model_config_pb2 as mc
from servekit.types import DATATYPES, InferenceResponse, ModelMetadata, Tensor, TensorSpec

TYPED: dict[str, list[Any]] = {
    "BOOL": [True, False], "UINT8": [0, 255], "UINT16": [0, 65535], "UINT32": [0, 2**32 - 1],
    "UINT64": [0, 2**64 - 1], "INT8": [-128, 127], "INT16": [-(2**15), 2**15 - 1], "INT32": [-(2**31), 2**31 - 1],
    "INT64": [-(2**63), 2**63 - 1], "FP32": [0.5, -1.25], "FP64": [1 / 3, -2.0], "BYTES": [b"a", b"\xff"],
}


def _request(**fields: Any) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", **fields)


def _typed(datatype: str, values: list[Any], shape: tuple[int, ...] = (2,)) -> pb.ModelInferRequest:
    request = _request()
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, codec.CONTENTS_FIELDS[datatype]).extend(values)
    return request


@pytest.mark.parametrize("datatype", sorted(TYPED))
def test_typed_contents_decode_to_the_datatype(datatype: str) -> None:
    [tensor] = codec.decode_infer_request(_typed(datatype, TYPED[datatype])).inputs
    assert tensor.datatype == datatype and tensor.shape == (2,)
    assert tensor.data.tolist() == TYPED[datatype]
    assert tensor.data.dtype == DATATYPES[datatype]


def test_raw_contents_decode_per_input_in_order() -> None:
    request = _request(id="r1", model_version="2")
    request.inputs.add(name="a", datatype="FP16", shape=[1, 2])
    request.inputs.add(name="b", datatype="BYTES", shape=[2])
    request.raw_input_contents.extend([array_to_bytes(np.array([[1.5, -2]], np.float16)),
                                       array_to_bytes(np.array([b"x", b""], dtype=object))])
    request.parameters["timeout"].int64_param = 5000
    request.outputs.add(name="out").parameters["flag"].bool_param = True
    decoded = codec.decode_infer_request(request)
    assert (decoded.id, decoded.model_version, decoded.parameters) == ("r1", "2", {"timeout": 5000})
    assert decoded.inputs[0].data.tolist() == [[1.5, -2.0]] and decoded.inputs[1].data.tolist() == [b"x", b""]
    assert [(o.name, o.parameters) for o in decoded.outputs or []] == [("out", {"flag": True})]


@pytest.mark.parametrize(("request_", "fragment"), [
    (_request(), "'inputs' must not be empty"),
    (pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(name="x")]), "model_name"),
    (_typed("INT8", [1, 300]), "out of range for INT8"),
    (_typed("FP32", [1.0]), "needs 2 values"),
    (_typed("FP32", [1.0, 2.0], shape=(-1, 2)), "negative dimension"),
    (_request(inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="TF32", shape=[1])]),
     "unknown datatype 'TF32'"),
    (_request(inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP16", shape=[1])]),
     "no typed contents field"),
    (_request(inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=pb.InferTensorContents(int_contents=[1]))]),
     "contents.fp32_contents, not int_contents"),
    (_request(inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])],
              raw_input_contents=[b"1234", b"5678"]), "2 entries for 1 inputs"),
    (_request(inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2])],
              raw_input_contents=[b"1234"]), "needs 8 bytes"),
])
def test_malformed_requests_are_invalid_input_naming_the_field(request_: pb.ModelInferRequest,
                                                                fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        codec.decode_infer_request(request_)


def test_mixing_raw_and_typed_contents_is_refused() -> None:
    request = _typed("FP32", [1.0, 2.0])
    request.raw_input_contents.append(b"\0" * 8)
    with pytest.raises(InvalidInput, match="one or the other"):
        codec.decode_infer_request(request)


def test_responses_carry_raw_contents_and_parameters() -> None:
    outputs = [Tensor.from_array("y", np.array([[1, 2]], dtype=np.int64)),
               Tensor.from_array("s", np.array([b"ok"], dtype=object))]
    outputs[0].parameters["big"] = 2**64 - 1
    response = InferenceResponse("m", "3", outputs, id="r9", parameters={"note": "x", "ratio": 0.5})
    message = codec.encode_infer_response(response)
    assert (message.model_name, message.model_version, message.id) == ("m", "3", "r9")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [("y", "INT64", [1, 2]),
                                                                             ("s", "BYTES", [1])]
    assert np.frombuffer(message.raw_output_contents[0], "<i8").tolist() == [1, 2]
    assert message.raw_output_contents[1] == b"\x02\0\0\0ok"
    assert codec.decode_parameters(message.parameters) == {"note": "x", "ratio": 0.5}
    assert codec.decode_parameters(message.outputs[0].parameters) == {"big": 2**64 - 1}


@pytest.mark.parametrize("response", [
    InferenceResponse("digits", "1", [Tensor.from_array("probabilities", np.full((2, 10), 0.1, np.float32)),
                                      Tensor.from_array("label", np.array([3, 7]))], id="r1"),
    InferenceResponse("m", "", [Tensor.from_array("s", np.array([b"a", b"bc"], dtype=object))]),
    InferenceResponse("m", "2", [Tensor.from_array("empty", np.zeros((0, 3)))]),
    InferenceResponse("m" * 300, "12", [Tensor("x", "FP32", (-1, 3), np.zeros((2, 3), np.float32))], id="é" * 200),
    InferenceResponse("m", "3", [Tensor.from_array("y", np.ones((1, 2)))], parameters={"note": "x"}),
    InferenceResponse("m", "3", [Tensor("y", "FP64", (1, 2), np.ones((1, 2)), {"flag": True})]),
])
def test_response_bytes_are_the_messages_bytes(response: InferenceResponse) -> None:
    # Twice: the second answer comes from the cached fixed parts.
    for _ in range(2):
        written = codec.encode_infer_response_bytes(response)
        message = codec.encode_infer_response(response)
        assert pb.ModelInferResponse.FromString(written) == message
        if not response.parameters and not any(t.parameters for t in response.outputs):
            assert written == message.SerializeToString()


def test_cached_response_parts_follow_the_shape_and_model() -> None:
    first = InferenceResponse("a", "1", [Tensor.from_array("y", np.zeros((1, 2), np.float32))])
    second = InferenceResponse("a", "2", [Tensor.from_array("y", np.zeros((3, 2), np.float32))])
    for response in (first, second, first):
        parsed = pb.ModelInferResponse.FromString(codec.encode_infer_response_bytes(response))
        assert (parsed.model_version, list(parsed.outputs[0].shape)) == (response.model_version,
                                                                         list(response.outputs[0].shape))
        assert len(parsed.raw_output_contents[0]) == 4 * response.outputs[0].data.size


def test_metadata_config_statistics_and_index_messages() -> None:
    spec = TensorSpec("x", "FP32", (-1, 4))
    metadata = codec.encode_model_metadata(ModelMetadata("m", ("1", "2"), "onnxruntime_onnx", (spec,), (spec,)))
    assert list(metadata.versions) == ["1", "2"] and list(metadata.inputs[0].shape) == [-1, 4]
    config = {"name": "m", "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
              "instance_group": [{"count": 2, "kind": "KIND_CPU"}], "version_policy": {"specific": {"versions": [1]}},
              "dynamic_batching": {"preferred_batch_size": [4], "max_queue_delay_microseconds": 2000}}
    parsed = codec.encode_model_config(config).config
    assert parsed.input[0].data_type == mc.TYPE_FP32 and parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert json_format.MessageToDict(parsed, preserving_proto_field_name=True)["dynamic_batching"] == {
        "preferred_batch_size": [4], "max_queue_delay_microseconds": "2000"}
    statistics = codec.encode_model_statistics({"model_stats": [{"name": "m", "version": "1", "inference_count": 3,
                                                                 "batch_stats": [{"batch_size": 3}]}]})
    assert statistics.model_stats[0].inference_count == 3
    rows = [{"name": "a", "version": "1", "state": "READY", "reason": ""}, {"name": "b", "state": "UNAVAILABLE",
                                                                            "reason": "bad"}]
    assert [m.name for m in codec.encode_repository_index(rows, ready_only=False).models] == ["a", "b"]
    assert [m.name for m in codec.encode_repository_index(rows, ready_only=True).models] == ["a"]
