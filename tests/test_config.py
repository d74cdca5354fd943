from __future__ import annotations

import pytest

from servekit.config import ModelConfig, ServerSettings, VersionPolicy, parse_model_config
from servekit.errors import ConfigError


def test_empty_config_takes_the_defaults() -> None:
    config = parse_model_config("", "m/config.yaml")
    assert config == ModelConfig()
    assert config.batching.enabled and config.instances == 1 and config.max_batch_size is None
    assert config.isolation == "none"


def test_full_config_parses() -> None:
    config = parse_model_config(
        """
        runtime: onnx
        max_batch_size: 16
        batching: {max_queue_delay_ms: 5, preferred_batch_sizes: [8, 4, 8], timeout_ms: 100}
        instances: 2
        isolation: process
        device: cpu
        version_policy: {latest: 2}
        default_version: 3
        inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]
        """,
        "m/config.yaml",
    )
    assert config.batching.preferred_batch_sizes == [4, 8] and config.isolation == "process"
    assert config.inputs is not None and config.inputs[0].spec().shape == (-1, 4)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_batch_size: -1", "models/m/config.yaml: max_batch_size: Input should be greater than or equal to 0"),
        ("batching: {max_queue_delay_ms: fast}", "batching.max_queue_delay_ms"),
        ("inputs: [{name: x, datatype: FLOAT, shape: [1]}]", "inputs.0.datatype: Value error, unknown datatype"),
        ("inputs: [{name: x, datatype: FP32, shape: [0]}]", "inputs.0.shape"),
        ("instances: 0", "instances"),
        ("colour: blue", "colour: Extra inputs are not permitted"),
        ("version_policy: {latest: 1, all: true}", "give only one of latest, all, specific"),
        ("isolation: thread", "isolation: Input should be 'none' or 'process'"),
        ("isolation: process\nbatching: {execution: inline}", "with isolation process it runs in another process"),
        ("[1, 2]", "expected a mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_bad_config_names_the_file_and_field(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model_config(text, "models/m/config.yaml")
    assert fragment in caught.value.message
    assert caught.value.message.startswith("models/m/config.yaml")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [({}, [5]), ({"latest": 2}, [3, 5]), ({"all": True}, [1, 3, 5]), ({"specific": [1, 5, 9]}, [1, 5])],
)
def test_version_policy_selects(policy: dict[str, object], expected: list[int]) -> None:
    assert VersionPolicy.model_validate(policy).select([3, 1, 5]) == expected


def test_server_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEKIT_HTTP_PORT", "9123")
    monkeypatch.setenv("SERVEKIT_LOAD_MODELS", '["a", "b"]')
    settings = ServerSettings()
    assert settings.http_port == 9123 and settings.load_models == ["a", "b"]
    assert ServerSettings(http_port=1).http_port == 1


@pytest.mark.parametrize(("given", "log_format", "access_log"), [
    ({}, "text", "text"),
    ({"log_format": "json"}, "json", "json"),
    ({"access_log": "json"}, "json", "json"),  # a JSON access log alone makes the whole log JSON
    ({"access_log": "off", "log_format": "json"}, "json", "off"),
    ({"access_log": "text", "log_format": "json"}, "json", "text"),
    ({"access_log": "json", "log_format": "text"}, "text", "json"),
])
def test_one_log_format_unless_told_apart(given: dict[str, str], log_format: str, access_log: str) -> None:
    settings = ServerSettings(**given)  # type: ignore[arg-type]
    assert (settings.log_format, settings.access_log) == (log_format, access_log)


def test_the_otel_endpoint_is_an_http_url() -> None:
    assert ServerSettings(otel_endpoint="http://127.0.0.1:4318").otel_endpoint == "http://127.0.0.1:4318"
    with pytest.raises(ValueError, match="otel_endpoint"):
        ServerSettings(otel_endpoint="127.0.0.1:4317")


def test_ray_block_defaults_to_one_replica() -> None:
    assert parse_model_config("", "config.yaml").ray.deployment_options() == {"num_replicas": 1}


def test_ray_block_maps_to_serve_deployment_options() -> None:
    text = "ray:\n  num_replicas: auto\n  min_replicas: 1\n  max_replicas: 4\n  target_ongoing_requests: 8\n" \
           "  num_cpus: 0.5\n"
    assert parse_model_config(text, "config.yaml").ray.deployment_options() == {
        "num_replicas": "auto",
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
        "ray_actor_options": {"num_cpus": 0.5},
    }


@pytest.mark.parametrize(("text", "fragment"), [
    ("ray:\n  num_replicas: 0\n", "num_replicas is at least 1"),
    ("ray:\n  num_replicas: 2\n  max_replicas: 4\n", "only apply with num_replicas: auto"),
    ("ray:\n  num_replicas: auto\n  min_replicas: 5\n  max_replicas: 2\n", "above max_replicas"),
    ("ray:\n  replicas: 2\n", "ray.replicas"),
])
def test_bad_ray_block_is_reported(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_model_config(text, "config.yaml")


@pytest.mark.parametrize("folder", ["../elsewhere", "/etc", "a/../../b", "a\\b"])
def test_a_version_folder_stays_inside_the_model_folder(folder: str) -> None:
    with pytest.raises(ConfigError, match=r"version_folder: .*inside the model folder"):
        parse_model_config(f"version_folder: {folder!r}\n", "config.yaml")
    assert ModelConfig(version_folder="weights/v1").version_folder == "weights/v1"
