"""servekit's triton_python_backend_utils layer, on its own."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from servekit.formats.triton import pb_utils


def test_tensor_holds_numpy_and_bytes_as_object_arrays_of_bytes() -> None:
    tensor = pb_utils.Tensor("x", np.arange(6, dtype=np.int32).reshape(2, 3))
    assert tensor.name() == "x" and tensor.is_cpu() and tensor.shape() == [2, 3] and tensor.triton_dtype() == 8
    assert tensor.as_numpy().dtype == np.int32
    text = pb_utils.Tensor("s", np.array(["a", "bé"]))
    assert text.as_numpy().dtype == np.object_ and text.as_numpy().tolist() == [b"a", "bé".encode()]
    assert pb_utils.Tensor("b", np.array([b"x", b"yz"])).as_numpy().tolist() == [b"x", b"yz"]


def test_tensor_from_dlpack_shares_memory() -> None:
    source = np.arange(4, dtype=np.float32)
    tensor = pb_utils.Tensor.from_dlpack("x", source)
    source[0] = 42.0
    assert tensor.as_numpy()[0] == 42.0
    assert np.from_dlpack(tensor).tolist() == [42.0, 1.0, 2.0, 3.0]


def test_request_accessors_as_triton_gives_them() -> None:
    request = pb_utils.InferenceRequest([pb_utils.Tensor("a", np.zeros(1))], requested_output_names=["y"],
                                        request_id="r1", parameters={"p1": "v", "p2": 3, "p3": True})
    assert [t.name() for t in request.inputs()] == ["a"]
    assert request.requested_output_names() == {"y"}
    assert request.request_id() == "r1" and request.correlation_id() == 0 and request.flags() == 0
    assert request.parameters() == '{"p1":"v","p2":3,"p3":true}'  # compact JSON text, as Triton's
    assert pb_utils.get_input_tensor_by_name(request, "a") is not None
    assert pb_utils.get_input_tensor_by_name(request, "missing") is None
    with pytest.raises(pb_utils.TritonModelException, match="BLS"):
        request.exec()


def test_response_with_outputs_or_an_error() -> None:
    response = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", np.ones(2))])
    assert not response.has_error() and response.error() is None
    assert pb_utils.get_output_tensor_by_name(response, "y") is not None
    assert pb_utils.get_output_tensor_by_name(response, "z") is None
    failed = pb_utils.InferenceResponse(error=pb_utils.TritonError("bad", pb_utils.TritonError.INVALID_ARG))
    assert failed.has_error() and failed.output_tensors() == []
    error = failed.error()
    assert error is not None and (error.message(), error.code()) == ("bad", 3)
    assert pb_utils.TritonError("x").code() == pb_utils.TritonError.INTERNAL


def test_error_codes_are_tritons_numbers() -> None:
    codes = pb_utils.TritonError
    numbers = [codes.UNKNOWN, codes.INTERNAL, codes.NOT_FOUND, codes.INVALID_ARG, codes.UNAVAILABLE,
               codes.UNSUPPORTED, codes.ALREADY_EXISTS, codes.CANCELLED]
    assert numbers == list(range(8))


def test_type_helpers() -> None:
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.triton_to_numpy_type(9) is np.int64 and pb_utils.triton_to_numpy_type(99) is None
    assert pb_utils.numpy_to_triton_type(np.float16) == 10 and pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.numpy_to_triton_type(np.object_) == 13 and pb_utils.numpy_to_triton_type(np.bool_) == 1


def test_bytes_serialization_round_trip() -> None:
    array = np.array([[b"ab", b""], [b"\x00z", "é"]], dtype=np.object_)
    encoded = pb_utils.serialize_byte_tensor(array)
    assert encoded == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x02\x00\x00\x00\x00z\x02\x00\x00\x00\xc3\xa9"
    assert pb_utils.deserialize_bytes_tensor(encoded).tolist() == [b"ab", b"", b"\x00z", "é".encode()]
    assert pb_utils.serialize_byte_tensor(np.zeros(2)) is None


def test_config_lookups_on_the_json_config() -> None:
    config = {"input": [{"name": "a", "data_type": "TYPE_FP32"}], "output": [{"name": "y", "dims": [2]}],
              "model_transaction_policy": {"decoupled": False}}
    assert pb_utils.get_input_config_by_name(config, "a") == {"name": "a", "data_type": "TYPE_FP32"}
    assert pb_utils.get_output_config_by_name(config, "y") == {"name": "y", "dims": [2]}
    assert pb_utils.get_input_config_by_name(config, "zz") is None
    assert pb_utils.using_decoupled_model_transaction_policy(config) is False


def test_logger_writes_to_servekits_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="servekit.triton_python"):
        pb_utils.Logger.log_info("i")
        pb_utils.Logger.log_warn("w")
        pb_utils.Logger.log_error("e")
        pb_utils.Logger.log_verbose("v")
        pb_utils.Logger.log("x", pb_utils.Logger.LogLevel.WARNING)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "i"), ("WARNING", "w"), ("ERROR", "e"), ("DEBUG", "v"), ("WARNING", "x")]


def test_constants() -> None:
    flags = (pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START, pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)
    assert flags == (1, 2)
    assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1


def test_auto_complete_object_as_models_use_it() -> None:
    config = pb_utils.ModelConfig(json.dumps({"name": "m", "max_batch_size": 0, "input": [
        {"name": "a", "data_type": "TYPE_FP32", "dims": [2]}], "output": []}))
    config.add_input({"name": "a", "data_type": "TYPE_FP32", "dims": [2]})  # the same again: fine
    config.add_input({"name": "b", "data_type": "TYPE_INT64", "dims": [1], "optional": True})
    config.add_output({"name": "y", "data_type": "TYPE_FP32", "dims": [2]})
    config.set_max_batch_size(8)
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": False})
    as_dict = config.as_dict()
    assert [entry["name"] for entry in as_dict["input"]] == ["a", "b"] and as_dict["max_batch_size"] == 8
    assert as_dict["dynamic_batching"] == {} and as_dict["model_transaction_policy"] == {"decoupled": False}
    with pytest.raises(ValueError, match="TYPE_FP32 in the configuration; the model says TYPE_INT32"):
        config.add_input({"name": "a", "data_type": "TYPE_INT32", "dims": [2]})
    with pytest.raises(ValueError, match="dims"):
        config.add_output({"name": "y", "data_type": "TYPE_FP32", "dims": [3]})
    with pytest.raises(ValueError, match="no 'dims'"):
        config.add_output({"name": "z", "data_type": "TYPE_FP32"})
    with pytest.raises(ValueError, match="other than name, data_type, dims"):
        config.add_output({"name": "z", "data_type": "TYPE_FP32", "dims": [1], "optional": True})
    with pytest.raises(ValueError, match="above"):
        config.set_max_batch_size(4)
    with pytest.raises(ValueError, match="cannot change"):
        config.set_model_transaction_policy({"decoupled": True})
