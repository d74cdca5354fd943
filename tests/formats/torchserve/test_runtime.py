"""The torchserve runtime: handlers written for TorchServe, in archives made by the real archiver,
run directly and through servekit's batcher (load_version builds it from the mapped config)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servekit.errors import ConfigError, InvalidInput, ServekitError
from servekit.formats.torchserve import HandlerFailed, unpack_mar
from servekit.formats.torchserve.runtime import TorchServeRuntime
from servekit.runtimes import create_runtime
from servekit.runtimes.base import Arrays, RuntimeContext, RuntimeRequest
from servekit.serving.version import ModelVersion, load_version
from tests.formats.torchserve.mar import ANSWERS, HANDLERS, archive, require_torch, write_state_dict, write_torchscript

RECORDED: dict[str, dict[str, Any]] = {entry["name"]: entry for entry in json.loads(ANSWERS.read_text())["answers"]}
TEXT = {"content_type": "text/plain"}


def body(value: bytes | str) -> Arrays:
    array = np.empty(1, dtype=object)
    array[0] = value.encode() if isinstance(value, str) else value
    return {"body": array}


def request(value: bytes | str, parameters: dict[str, Any] | None = None, request_id: str | None = None
            ) -> RuntimeRequest:
    return RuntimeRequest(body(value), parameters if parameters is not None else TEXT, (), request_id)


def recorded_body(name: str) -> bytes:
    response = RECORDED[name]["response"]
    if "body_base64" in response:
        return base64.b64decode(response["body_base64"])
    return str(response["body"]).encode("utf-8")


def answer_body(answer: Arrays | Exception) -> bytes:
    assert isinstance(answer, dict), answer
    return bytes(answer["body"][0])


class Loaded:
    """Archives unpacked as version 1 of a servekit model; every runtime loaded is unloaded after."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtimes: list[TorchServeRuntime] = []
        self.versions: list[ModelVersion] = []

    def runtime(self, mar: Path, name: str | None = None, handler: str | None = None) -> TorchServeRuntime:
        model_dir = self.root / (name or mar.name.partition(".")[0])
        model_dir.mkdir(parents=True)
        model = unpack_mar(mar, model_dir / "1")
        config = model.model_config()
        if handler is not None:
            config = config.model_copy(update={"handler": handler})
        runtime = create_runtime("torchserve", RuntimeContext(model.name, 1, model_dir, model_dir / "1", config))
        assert isinstance(runtime, TorchServeRuntime)
        runtime.load()
        self.runtimes.append(runtime)
        return runtime

    def version(self, mar: Path, **registration: Any) -> ModelVersion:
        model_dir = self.root / mar.name.partition(".")[0]
        model_dir.mkdir(parents=True)
        model = unpack_mar(mar, model_dir / "1")
        loaded = load_version(model.name, model_dir, 1, model.model_config(**registration))
        self.versions.append(loaded)
        return loaded

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.unload()
        for version in self.versions:
            asyncio.run(version.batcher.close())


@pytest.fixture()
def loaded(tmp_path: Path) -> Iterator[Loaded]:
    holder = Loaded(tmp_path / "models")
    yield holder
    holder.close()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The archives without torch: module-level handle() handlers."""
    export = tmp_path_factory.mktemp("mar")
    return {
        "echo": archive(export, "echo", HANDLERS / "echo_handler.py", config=HANDLERS / "model_config.yaml"),
        "echofn": archive(export, "echofn", f"{HANDLERS / 'echo_handler'}:handle", version="3"),
        "batch": archive(export, "batch", HANDLERS / "batch_handler.py"),
    }


@pytest.fixture(scope="module")
def torch_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The archives around torch models, made in code, as the recording made them."""
    require_torch()
    work = tmp_path_factory.mktemp("weights")
    export = tmp_path_factory.mktemp("mar")
    script, state = write_torchscript(work), write_state_dict(work)
    return {
        "tiny": archive(export, "tiny", HANDLERS / "text_handler.py", serialized=script,
                        extra=(HANDLERS / "index_to_name.json",), config=HANDLERS / "model_config.yaml"),
        "eager": archive(export, "eager", HANDLERS / "eager_handler.py", version="2.0",
                         model_file=HANDLERS / "model.py", serialized=state),
        "labeled": archive(export, "labeled", HANDLERS / "labeled_handler.py", serialized=script,
                           extra=(HANDLERS / "index_to_name.json", HANDLERS / "text_utils.py"),
                           config=HANDLERS / "model_config.yaml"),
        "tgz": archive(export, "tinytgz", HANDLERS / "text_handler.py", serialized=script, archive_format="tgz"),
        "folder": archive(export, "tinydir", HANDLERS / "text_handler.py", serialized=script,
                          archive_format="no-archive"),
    }


# -- handlers with torch models --------------------------------------------------------------------


def test_torchscript_handler_answers_as_torchserve_did_byte_for_byte(torch_archives: dict[str, Path],
                                                                     loaded: Loaded) -> None:
    runtime = loaded.runtime(torch_archives["tiny"])
    answers = runtime.predict_requests([
        request("1,2,3"),
        request("[1, 2, 3]", {"content_type": "application/json"}),
    ])
    assert answer_body(answers[0]) == recorded_body("tiny_text")
    assert answer_body(answers[1]) == recorded_body("tiny_json")
    assert isinstance(answers[0], dict) and answers[0]["content_type"][0] == b""  # TorchServe sent none
    assert answers[0]["status"].tolist() == [200]


def test_eager_model_file_and_state_dict(torch_archives: dict[str, Path], loaded: Loaded) -> None:
    runtime = loaded.runtime(torch_archives["eager"])
    [answer] = runtime.predict_requests([request("1,2,3", {"content_type": "application/octet-stream"})])
    assert answer_body(answer) == recorded_body("eager_octet")


@pytest.mark.parametrize("archive_format", ["tgz", "folder"])
def test_tgz_and_no_archive_formats(torch_archives: dict[str, Path], loaded: Loaded, archive_format: str) -> None:
    runtime = loaded.runtime(torch_archives[archive_format])
    assert answer_body(runtime.predict_requests([request("1,2,3")])[0]) == recorded_body("tiny_text")


def test_extra_module_lazy_ts_import_label_map_and_yaml_keys(torch_archives: dict[str, Path], loaded: Loaded) -> None:
    runtime = loaded.runtime(torch_archives["labeled"])
    [answer] = runtime.predict_requests([request("1,2,3")])
    assert json.loads(answer_body(answer)) == {"left": 0.006693, "right": 0.993307}  # index_to_name.json
    assert "ts" not in sys.modules and "text_utils" not in sys.modules


def test_a_failing_request_in_preprocess_fails_its_batch_with_torchserves_answer(torch_archives: dict[str, Path],
                                                                              loaded: Loaded) -> None:
    runtime = loaded.runtime(torch_archives["tiny"])
    answers = runtime.predict_requests([request("1,2,3"), request("not numbers")])
    recorded = json.loads(recorded_body("tiny_handler_raises"))
    for answer in answers:
        assert isinstance(answer, HandlerFailed)
        assert (answer.torchserve_status, answer.torchserve_message) == (recorded["code"], recorded["message"])
        assert answer.http_status == 500 and "ValueError" in answer.message
    assert answer_body(runtime.predict_requests([request("1,2,3")])[0]) == recorded_body("tiny_text")


# -- module-level handle(), headers, content types, failures ----------------------------------------


def test_module_handle_sees_what_torchserve_gives(archives: dict[str, Path], loaded: Loaded) -> None:
    runtime = loaded.runtime(archives["echofn"])  # handler "echo_handler:handle"
    headers = {"X-Custom": "Value1", "content-type": "application/json"}
    [answer] = runtime.predict_requests([request('{"a": [1, 2]}', {"headers": headers}, request_id="req-7")])
    seen = json.loads(answer_body(answer))
    assert seen["row"] == {"body": {"type": "dict", "value": {"a": [1, 2]}}}
    assert seen["headers"]["X-Custom"] == "Value1"
    assert seen["headers"]["body"] == {"content-type": "application/json"}
    assert seen["request_id"] == "req-7"
    assert seen["model_name"] == "echofn"
    assert seen["manifest"]["model"]["handler"] == "echo_handler:handle"
    assert seen["system_properties"] == {"model_dir": str(loaded.root / "echofn" / "1"), "gpu_id": None,
                                         "batch_size": 1, "server_name": "MMS", "server_version": "0.12.0",
                                         "limit_max_image_pixels": True}


def test_model_yaml_config_and_batch_size(archives: dict[str, Path], loaded: Loaded) -> None:
    [answer] = loaded.runtime(archives["echo"]).predict_requests([request("x")])
    seen = json.loads(answer_body(answer))
    recorded = json.loads(recorded_body("decode_text"))
    assert seen["model_yaml_config"] == recorded["model_yaml_config"]
    assert seen["system_properties"]["batch_size"] == recorded["system_properties"]["batch_size"] == 4


@pytest.mark.parametrize("mode", ["str", "bytes", "list", "int", "none", "dict", "ctype", "header", "status",
                                  "status4xx"])
def test_answers_and_their_content_type_status_and_headers_match_torchserve(
        archives: dict[str, Path], loaded: Loaded, mode: str) -> None:
    runtime = loaded.runtime(archives["echo"])
    [answer] = runtime.predict_requests([request("x", {**TEXT, "headers": [("X-Mode", mode)]})])
    recorded = RECORDED[f"return_{mode}"]["response"]
    assert isinstance(answer, dict)
    assert answer_body(answer) == recorded_body(f"return_{mode}")
    assert answer["status"].tolist() == [recorded["status"]]
    sent = dict(recorded["headers"])
    assert answer["content_type"][0].decode() == sent.get("content-type", "")
    extra = json.loads(answer["headers"][0])
    assert extra == ({"X-Extra": "yes"} if mode == "header" else {})
    assert sent.get("x-extra") == extra.get("X-Extra")


@pytest.mark.parametrize("mode", ["raise", "predexc", "mismatch", "notlist"])
def test_failures_carry_torchserves_status_and_message(archives: dict[str, Path], loaded: Loaded, mode: str) -> None:
    runtime = loaded.runtime(archives["echo"])
    answers = runtime.predict_requests([request("x", {"headers": {"X-Mode": mode}}), request("y")])
    recorded = json.loads(recorded_body(f"return_{mode}"))
    assert len(answers) == 2
    for answer in answers:
        assert isinstance(answer, HandlerFailed)
        assert (answer.torchserve_status, answer.torchserve_message) == (recorded["code"], recorded["message"])
    assert answers[0].http_status == (418 if mode == "predexc" else 500)  # type: ignore[union-attr]


def test_a_request_without_a_body_input_fails_alone(archives: dict[str, Path], loaded: Loaded) -> None:
    runtime = loaded.runtime(archives["batch"])
    bad = RuntimeRequest({"x": np.zeros(1, dtype=np.float32)}, {})
    answers = runtime.predict_requests([request("a"), bad, request("b")])
    assert isinstance(answers[1], InvalidInput)
    assert [json.loads(answer_body(answers[i]))["batch"] for i in (0, 2)] == [["a", "b"], ["a", "b"]]


def test_signature_for_oip_metadata(archives: dict[str, Path], loaded: Loaded) -> None:
    signature = loaded.runtime(archives["batch"]).signature()
    assert [(s.name, s.datatype, s.shape) for s in signature.inputs] == [("body", "BYTES", (-1,))]
    assert [(s.name, s.datatype) for s in signature.outputs] == [("body", "BYTES"), ("content_type", "BYTES"),
                                                                  ("status", "INT32"), ("headers", "BYTES")]


def test_load_errors_are_clear(tmp_path: Path, archives: dict[str, Path], loaded: Loaded) -> None:
    with pytest.raises(ConfigError, match=r"no image_classifier\.py in the archive"):
        loaded.runtime(archives["batch"], name="builtin", handler="image_classifier")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        loaded.runtime(archives["batch"], name="nofunction", handler="batch_handler:nope")
    context = RuntimeContext("m", 1, tmp_path, tmp_path / "1", loaded.runtime(archives["batch"]).context.config)
    with pytest.raises(ConfigError, match=r"no MAR-INF/MANIFEST\.json"):
        TorchServeRuntime(context).load()


# -- through servekit's batcher --------------------------------------------------------------------


async def submit_all(version: ModelVersion, bodies: Sequence[str]) -> list[dict[str, Any] | ServekitError]:
    async def one(index: int, text: str) -> dict[str, Any] | ServekitError:
        try:
            outputs = await version.batcher.submit(body(text), parameters={"headers": {"X-Mode": f"m{index}"}},
                                                   request_id=f"r{index}")
        except ServekitError as exc:
            return exc
        return json.loads(bytes(outputs["body"][0]))  # type: ignore[no-any-return]

    return await asyncio.gather(*(one(i, text) for i, text in enumerate(bodies)))


def test_32_concurrent_requests_batch_up_to_batch_size_each_answered_its_own(archives: dict[str, Path],
                                                                           loaded: Loaded) -> None:
    version = loaded.version(archives["batch"], batch_size=8)
    assert (version.max_batch_size, version.runtime_name, version.platform) == (8, "torchserve", "torchserve")
    bodies = [f"q{i}" for i in range(32)]
    answers = asyncio.run(submit_all(version, bodies))
    for index, answer in enumerate(answers):
        assert isinstance(answer, dict), answer
        assert (answer["body"], answer["request_id"], answer["x_mode"]) == (bodies[index], f"r{index}", f"m{index}")
        assert bodies[index] in answer["batch"]
    sizes = {tuple(answer["batch"]) for answer in answers if isinstance(answer, dict)}
    assert sum(len(batch) for batch in sizes) == 32  # every request in exactly one batch
    # All 32 arrive in one event-loop turn: the first batch leaves full, none holds more than 8.
    assert max(len(batch) for batch in sizes) == 8


def test_a_length_mismatch_fails_its_own_batch_only(archives: dict[str, Path], loaded: Loaded) -> None:
    version = loaded.version(archives["batch"], batch_size=4)
    bodies = [f"q{i}" for i in range(12)]
    bodies[5] = "mismatch"
    answers = asyncio.run(submit_all(version, bodies))
    failed = {bodies[i] for i, answer in enumerate(answers) if isinstance(answer, ServekitError)}
    served = [answer for answer in answers if isinstance(answer, dict)]
    assert "mismatch" in failed
    assert all("mismatch" not in answer["batch"] for answer in served)
    assert failed == set(bodies) - {text for answer in served for text in answer["batch"]}
    assert 1 < len(failed) <= 4 and len(served) >= 8
    for answer in answers:
        if isinstance(answer, ServekitError):
            assert isinstance(answer, HandlerFailed)
            assert answer.torchserve_message == "number of batch response mismatched"
