"""config.pbtxt -> servekit's ModelConfig: every mapped field, and the refusals (pure: no files)."""

from __future__ import annotations

import logging

import pytest

from servekit.errors import ConfigError
from servekit.formats.triton.config import parse_triton_config

SOURCE = "models/m/config.pbtxt"


def _parse(text: str, folder: str = "m"):  # type: ignore[no-untyped-def]
    return parse_triton_config(text, SOURCE, folder)


def test_a_batching_onnx_model() -> None:
    config = _parse("""
        name: "m"
        platform: "onnxruntime_onnx"
        max_batch_size: 16
        version_policy: { specific: { versions: [ 1, 3 ] } }
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "label" data_type: TYPE_INT64 dims: [ ] } ]
        instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]
        default_model_filename: "linear.onnx"
        dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 1500
          default_queue_policy { default_timeout_microseconds: 250000 max_queue_size: 64 } }
        parameters: { key: "alpha" value: { string_value: "0.5" } }
        response_cache { enable: true }
    """)
    assert config.runtime == "onnx" and config.platform == "onnxruntime_onnx" and config.name == "m"
    assert [(t.name, t.datatype, t.shape) for t in config.inputs or []] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, t.shape) for t in config.outputs or []] == [("y", "FP32", [-1, 3]),
                                                                              ("label", "INT64", [-1])]
    assert config.max_batch_size == 16 and config.model_file == "linear.onnx"
    batching = config.batching
    assert (batching.enabled, batching.preferred_batch_sizes, batching.max_queue_delay_ms) == (True, [4, 8], 1.5)
    assert (batching.timeout_ms, batching.max_queue_size, batching.oversize) == (250.0, 64, "reject")
    assert config.version_policy.specific == [1, 3]
    assert (config.instances, config.device) == (3, "cpu")
    assert config.parameters == {"alpha": "0.5"} and config.cache.enabled is True


def test_max_batch_size_zero_keeps_full_shapes_and_never_batches() -> None:
    config = _parse("""
        backend: "python"
        max_batch_size: 0
        input [ { name: "IN" data_type: TYPE_STRING dims: [ 2, -1 ] optional: true } ]
        output [ { name: "OUT" data_type: TYPE_UINT8 dims: [ 2 ] } ]
    """)
    assert config.runtime == "triton_python" and config.platform == "python" and config.max_batch_size == 0
    inputs = config.inputs or []
    assert (inputs[0].datatype, inputs[0].shape, inputs[0].optional) == ("BYTES", [2, -1], True)
    assert config.batching.enabled is False
    assert config.version_policy.latest == 1 and (config.instances, config.device) == (1, "auto")


def test_no_dynamic_batching_is_tritons_default_scheduler_each_request_alone() -> None:
    config = _parse('backend: "python"\nmax_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]')
    assert config.max_batch_size == 8 and config.inputs and config.inputs[0].shape == [-1, 1]
    assert config.batching.enabled is False


@pytest.mark.parametrize(("text", "runtime"), [
    ('platform: "pytorch_libtorch"\ninput [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]'
     '\noutput [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]', "torchscript"),
    ('backend: "pytorch"\ninput [ { name: "a" data_type: TYPE_FP32 dims: [ 2 ] } ]'
     '\noutput [ { name: "b" data_type: TYPE_FP32 dims: [ 2 ] } ]', "torchscript"),
    ('backend: "onnxruntime"', "onnx"),
    ('platform: "onnxruntime_onnx"\nbackend: "onnxruntime"', "onnx"),
    ("max_batch_size: 4", None),  # neither: servekit tells by the version's files
])
def test_platforms_and_backends(text: str, runtime: str | None) -> None:
    assert _parse(text).runtime == runtime


def test_libtorch_tensors_are_ordered_by_their_index() -> None:
    config = _parse("""
        platform: "pytorch_libtorch"
        input [ { name: "INPUT__1" data_type: TYPE_INT64 dims: [ 1 ] },
                { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
    """)
    assert [t.name for t in config.inputs or []] == ["INPUT__0", "INPUT__1"]


def test_gpu_groups_place_count_instances_on_each_listed_gpu() -> None:
    config = _parse('backend: "python"\ninstance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]')
    assert (config.instances, config.device) == (4, ["cuda:0", "cuda:0", "cuda:1", "cuda:1"])
    assert _parse("instance_group [ { count: 2 kind: KIND_GPU gpus: [ 1 ] } ]").device == "cuda:1"
    assert _parse("instance_group [ { count: 3 kind: KIND_GPU } ]").device == "cuda"
    mixed = _parse("instance_group [ { count: 1 kind: KIND_CPU }, { kind: KIND_GPU gpus: [ 0 ] } ]")
    assert (mixed.instances, mixed.device) == (2, ["cpu", "cuda:0"])
    assert _parse("instance_group [ { count: 2 kind: KIND_AUTO } ]").device == "auto"


def test_latest_and_all_version_policies() -> None:
    assert _parse("version_policy: { latest: { num_versions: 2 } }").version_policy.latest == 2
    assert _parse("version_policy: { all: { } }").version_policy.all is True


@pytest.mark.parametrize(("text", "message"), [
    ('platform: "tensorrt_plan"', r"platform: 'tensorrt_plan' is not served by servekit"),
    ('backend: "vllm"', r"backend: 'vllm' is not served by servekit"),
    ('platform: "ensemble"', "ensembles are not served"),
    ('platform: "onnxruntime_onnx"\nbackend: "python"', "disagree"),
    ('name: "other"', r"name: 'other' differs from its folder 'm'"),
    ('sequence_batching { }', "sequence_batching: stateful"),
    ('model_transaction_policy { decoupled: true }', "model_transaction_policy.decoupled: decoupled models"),
    ('input [ { name: "x" data_type: TYPE_BF16 dims: [ 1 ] } ]',
     r"input\[0\] \(x\): data_type: TYPE_BF16 is not served"),
    ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 0 ] } ]', r"input\[0\] \(x\): dims: \[0\]"),
    ('output [ { data_type: TYPE_FP32 dims: [ 1 ] } ]', r"output\[0\]: name: missing"),
    ('platform: "onnxruntime_onnx"\n'
     'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 2 ] } } ]',
     "input x: reshape: servekit applies reshape for python backend models only"),
    ('input [ { name: "x" data_type: TYPE_INT32 dims: [ 1 ] is_shape_tensor: true } ]', "is_shape_tensor"),
    ('max_batch_size: 4\ndynamic_batching { preferred_batch_size: [ 8 ] }', r"preferred_batch_size: \[8\] not within"),
    ('max_batch_size: 0\ndynamic_batching { }', "dynamic_batching: needs max_batch_size > 0"),
    ('platform: "pytorch_libtorch"', "a TorchScript model cannot describe its tensors"),
    ('parameters: { key: "servekit.execution" value: { string_value: "fast" } }',
     "parameters servekit.execution: 'fast' is not one of auto, thread, inline"),
    ('parameters: { key: "servekit.execution" value: { string_value: "inline" } }\n'
     'instance_group [ { count: 2 kind: KIND_CPU } ]',
     "parameters servekit.execution: inline runs one instance on the event loop; instance_group gives 2"),
    ('max_batch_size: 2\ndynamic_batching { }\n'
     'parameters: { key: "servekit.hold_when_idle" value: { string_value: "yes" } }',
     "parameters servekit.hold_when_idle: 'yes' is not true, false or adaptive"),
])
def test_refusals_name_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{SOURCE}: .*{message}"):
        _parse(text)


def test_unknown_fields_are_a_warning_naming_them(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="servekit.formats.triton"):
        config = _parse('backend: "python"\nmax_batch_size: 2\nfancy_new_thing: { a: 1 }\n'
                        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] colour: "red" } ]')
    assert config.max_batch_size == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{SOURCE}: skipped fields servekit does not know: ModelConfig.fancy_new_thing, ModelInput.colour"]


@pytest.mark.parametrize("execution", ["auto", "thread", "inline"])
def test_the_servekit_execution_parameter_chooses_where_batches_run(execution: str) -> None:
    config = _parse(f'backend: "python"\nmax_batch_size: 4\ndynamic_batching {{ }}\n'
                    f'parameters: {{ key: "servekit.execution" value: {{ string_value: "{execution}" }} }}')
    assert config.batching.execution == execution and config.batching.enabled is True
    assert config.parameters == {"servekit.execution": execution}  # the model still sees its parameters
    assert _parse('backend: "python"').batching.execution == "auto"


def test_batches_hold_adaptively_unless_a_parameter_asks_for_triton_s_rule_or_servekit_s() -> None:
    dynamic = 'backend: "python"\nmax_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 500 }\n'
    assert _parse(dynamic).batching.hold_when_idle == "adaptive"
    for value, expected in (("true", True), ("TRUE", True), ("false", False), ("adaptive", "adaptive")):
        parameter = f'parameters: {{ key: "servekit.hold_when_idle" value: {{ string_value: "{value}" }} }}'
        held = _parse(dynamic + parameter)
        assert held.batching.hold_when_idle == expected and held.batching.max_queue_delay_ms == 0.5


def test_delay_timeout_action_never_rejects() -> None:
    config = _parse("max_batch_size: 2\ndynamic_batching { default_queue_policy { timeout_action: DELAY "
                    "default_timeout_microseconds: 100 } }")
    assert config.batching.timeout_ms is None
