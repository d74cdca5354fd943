"""ts.context: a Context built as TorchServe builds it, and per-request headers and responses."""

from __future__ import annotations

import pytest

from servekit.formats.torchserve.ts.context import Context, RequestProcessor


def context() -> Context:
    built = Context("m", "/models/m", {"model": {"modelName": "m"}}, 4, None, "0.12.0",
                    model_yaml_config={"handler": {"k": 1}})
    built.request_ids = {0: "a", 1: "b"}
    built.request_processor = [RequestProcessor({"X-Mode": "str", "body": {"content-type": "text/plain"}}),
                               RequestProcessor({"accept": "text/csv"})]
    return built


def test_load_time_facts() -> None:
    built = context()
    assert built.system_properties == {"model_dir": "/models/m", "gpu_id": None, "batch_size": 4,
                                       "server_name": "MMS", "server_version": "0.12.0",
                                       "limit_max_image_pixels": True}
    assert built.model_yaml_config == {"handler": {"k": 1}}
    assert built.manifest["model"]["modelName"] == "m"


def test_request_headers_any_case_and_ids() -> None:
    built = context()
    assert built.get_request_header(0, "X-Mode") == built.get_request_header(0, "x-mode") == "str"
    assert built.get_request_header(1, "Accept") == "text/csv"
    assert built.get_request_header(1, "missing") is None
    assert built.get_all_request_header(0)["body"] == {"content-type": "text/plain"}
    assert (built.get_request_id(1), built.get_request_id(5)) == ("b", None)


def test_response_settings_per_request() -> None:
    built = context()
    built.set_response_content_type(1, "text/csv")
    built.set_response_status(422, "Bad", 1)
    built.set_response_header(0, "X-Extra", "yes")
    assert built.get_response_content_type(1) == "text/csv"
    assert built.get_response_status(1) == (422, "Bad")
    assert built.get_response_status(0) == (200, None)
    assert built.get_response_headers(0) == {"X-Extra": "yes"}
    built.set_all_response_status(503, "busy")
    assert [built.get_response_status(i)[0] for i in (0, 1)] == [503, 503]


def test_headers_exist_only_while_a_batch_runs() -> None:
    built = Context("m", "/m", {}, 1, None, "0.12.0")
    assert built.get_request_id() is None
    with pytest.raises(RuntimeError, match="inside handle"):
        built.get_request_header(0, "x")
