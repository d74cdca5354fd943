"""config.pbtxt as a message: parsing, unknown fields named, Triton's completion and JSON."""

from __future__ import annotations

import pytest

from servekit.errors import ConfigError
from servekit.formats.triton.pbtxt import completed, config_json, parse_pbtxt

REAL_CONFIG = """
name: "resnet"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224, 224 ] } ]
output [ { name: "probs" data_type: TYPE_FP32 dims: [ 1000 ] label_filename: "labels.txt" } ]
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt"
  parameters { key: "precision_mode" value: "FP16" } } ] } }
model_warmup [ { name: "zeros" batch_size: 1 inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 3, 224, 224 ]
  zero_data: true } } } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 5000 max_queue_size: 16 } }
"""


def test_a_real_config_parses_with_nothing_unknown() -> None:
    message, unknown = parse_pbtxt(REAL_CONFIG, "resnet/config.pbtxt")
    assert unknown == []
    assert message.platform == "onnxruntime_onnx" and list(message.input[0].dims) == [3, 224, 224]
    assert message.dynamic_batching.default_queue_policy.max_queue_size == 16
    accelerator = message.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}


def test_unknown_fields_are_skipped_and_named_once_each() -> None:
    text = REAL_CONFIG + """
future_field: 3
input [ { name: "mask" data_type: TYPE_BOOL dims: [ 1 ] new_flag: true } ]
response_cache { shiny { level: 2 nested { deep: 1 } } }
"""
    message, unknown = parse_pbtxt(text, "resnet/config.pbtxt")
    assert unknown == ["ModelConfig.future_field", "ModelInput.new_flag", "ModelResponseCache.shiny"]
    assert [tensor.name for tensor in message.input] == ["input", "mask"]


def test_text_that_is_not_protobuf_text_format_names_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^m/config.pbtxt: not valid protobuf text format: 2:"):
        parse_pbtxt('name: "m"\nmax_batch_size: "eight"\n', "m/config.pbtxt")


def test_two_schedulers_are_refused_by_the_parser() -> None:
    with pytest.raises(ConfigError, match="scheduling_choice"):
        parse_pbtxt("dynamic_batching { }\nsequence_batching { }\n", "m/config.pbtxt")


def test_completed_fills_what_triton_fills_at_load() -> None:
    message, _ = parse_pbtxt('backend: "python"\ninstance_group [ { kind: KIND_CPU }, { count: 2 } ]\n', "x")
    done = completed(message, "folder")
    assert done.name == "folder" and done.default_model_filename == "model.py"
    assert done.version_policy.latest.num_versions == 1
    assert [(g.name, g.count, g.kind) for g in done.instance_group] == [("folder_0", 1, 2), ("folder_1", 2, 2)]
    bare, _ = parse_pbtxt('backend: "python"\n', "x")
    assert [g.name for g in completed(bare, "m").instance_group] == ["m"]  # as Triton names a default group
    assert completed(bare, "m").optimization.input_pinned_memory.enable is True
    off, _ = parse_pbtxt("optimization { input_pinned_memory { enable: false } }", "x")
    assert completed(off, "m").optimization.input_pinned_memory.enable is False


def test_config_json_is_tritons_document() -> None:
    message, _ = parse_pbtxt(REAL_CONFIG, "x")
    document = config_json(completed(message, "resnet"))
    assert document["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                                     "dims": [3, 224, 224], "is_shape_tensor": False, "allow_ragged_batch": False,
                                     "optional": False, "is_non_linear_format_io": False}
    assert document["dynamic_batching"]["max_queue_delay_microseconds"] == 100  # a number, not "100"
    assert document["dynamic_batching"]["default_queue_policy"] == {
        "timeout_action": "REJECT", "default_timeout_microseconds": 5000, "allow_timeout_override": False,
        "max_queue_size": 16}
    assert document["model_warmup"][0]["inputs"]["input"]["dims"] == [3, 224, 224]
    assert document["max_batch_size"] == 8 and document["backend"] == "" and document["parameters"] == {}
    assert "sequence_batching" not in document
