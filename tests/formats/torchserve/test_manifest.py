"""MANIFEST.json and model_config.yaml parsing, and their mapping onto ModelConfig (pure)."""

from __future__ import annotations

import json

import pytest

from servekit.errors import ConfigError
from servekit.formats.torchserve.manifest import parse_manifest, parse_model_yaml, to_model_config

# As torch-model-archiver 0.12 wrote it for the recorded "eager" archive.
EAGER = {
    "createdOn": "03/12/2026 08:44:37",
    "runtime": "python",
    "model": {"modelName": "eager", "serializedFile": "tiny_state.pth", "handler": "eager_handler.py",
              "modelFile": "model.py", "modelVersion": "2.0"},
    "archiverVersion": "0.12.0",
}


def test_manifest_fields() -> None:
    manifest = parse_manifest(json.dumps(EAGER))
    assert (manifest.model_name, manifest.handler, manifest.model_version) == ("eager", "eager_handler.py", "2.0")
    assert (manifest.serialized_file, manifest.model_file, manifest.config_file) == ("tiny_state.pth", "model.py",
                                                                                     None)
    assert (manifest.runtime, manifest.archiver_version) == ("python", "0.12.0")
    assert manifest.raw == EAGER
    assert sorted(manifest.archive_files()) == ["eager_handler.py", "model.py", "tiny_state.pth"]


def test_handler_module_function_names_no_file_and_version_defaults() -> None:
    raw = {"model": {"modelName": "fn", "handler": "echo_handler:handle"}}
    manifest = parse_manifest(json.dumps(raw).encode())
    assert manifest.archive_files() == []  # "echo_handler" is a module name, the archiver stores echo_handler.py
    assert manifest.model_version == "1.0"
    assert manifest.runtime == "python"


@pytest.mark.parametrize(("raw", "message"), [
    ("{", "not valid JSON"),
    ("[]", "'model' object"),
    ('{"model": {"handler": "h.py"}}', "model.modelName is missing"),
    ('{"model": {"modelName": "m"}}', "model.handler is missing"),
    ('{"model": {"modelName": 3, "handler": "h.py"}}', "model.modelName must be a string"),
    ('{"runtime": "LSP", "model": {"modelName": "m", "handler": "h.py"}}', "Python only"),
    ('{"model": {"modelName": "m", "handler": "h.py", "serializedFile": "../x.pt"}}', "not a path inside"),
    ('{"model": {"modelName": "m", "handler": "h.py", "modelFile": "/etc/passwd"}}', "not a path inside"),
])
def test_bad_manifests_name_the_file_and_field(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_manifest(raw, "a.mar: MAR-INF/MANIFEST.json")
    assert str(caught.value).startswith("a.mar: MAR-INF/MANIFEST.json: ")


YAML = """
minWorkers: 2
maxWorkers: 3
batchSize: 4
maxBatchDelay: 50
responseTimeout: 2
deviceType: cpu
handler:
  threshold: 0.7
"""


def test_yaml_maps_onto_the_model_config() -> None:
    raw, settings = parse_model_yaml(YAML, "model_config.yaml")
    assert raw["handler"] == {"threshold": 0.7}  # handler keys stay, for context.model_yaml_config
    config = to_model_config(parse_manifest(json.dumps(EAGER)), settings)
    assert (config.name, config.runtime, config.max_batch_size, config.instances, config.device) == (
        "eager", "torchserve", 4, 2, "cpu")
    assert (config.batching.max_queue_delay_ms, config.execution_timeout_s, config.batching.execution) == (
        50, 2, "thread")
    assert config.batching.timeout_ms is None  # a queued request waits as long as TorchServe lets it
    assert settings.max_workers == 3


def test_torchserve_defaults_without_a_yaml() -> None:
    _, settings = parse_model_yaml("", "model_config.yaml")
    config = to_model_config(parse_manifest(json.dumps(EAGER)), settings, name="renamed")
    # TorchServe's own defaults, as its describe answer shows them (batchSize 1, maxBatchDelay 100,
    # responseTimeout 120); the device is TorchServe's choice too: the GPU when there is one.
    assert (config.name, config.max_batch_size, config.instances, config.device) == ("renamed", 1, 1, "auto")
    assert (config.batching.max_queue_delay_ms, config.execution_timeout_s) == (100, 120)


def test_gpu_device_and_ids() -> None:
    _, settings = parse_model_yaml("deviceType: gpu\ndeviceIds: [1, 2]\n", "y")
    assert to_model_config(parse_manifest(json.dumps(EAGER)), settings).device == "cuda"
    assert settings.device_ids == [1, 2]


def test_registration_values_with_torchserves_precedence() -> None:
    # Recorded (register_params_over_yaml): batch_size and max_batch_delay win over the yaml,
    # the yaml's responseTimeout wins over response_timeout.
    manifest = parse_manifest(json.dumps(EAGER))
    _, settings = parse_model_yaml(YAML, "y")
    config = to_model_config(manifest, settings, batch_size=8, max_batch_delay_ms=10, response_timeout_s=9,
                             initial_workers=1)
    assert (config.max_batch_size, config.batching.max_queue_delay_ms, config.execution_timeout_s,
            config.instances) == (8, 10, 2, 1)
    _, no_yaml = parse_model_yaml("", "y")
    assert to_model_config(manifest, no_yaml, response_timeout_s=9).execution_timeout_s == 9


@pytest.mark.parametrize(("text", "message"), [
    ("batchSize: 0\n", "batchSize"),
    ("batchSize: many\n", "batchSize"),
    ("maxBatchDelay: -1\n", "maxBatchDelay"),
    ("deviceType: neuron\n", "deviceType 'neuron'"),
    ("- a\n", "mapping at the top level"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_yaml_values_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_yaml(text, "model_config.yaml")
