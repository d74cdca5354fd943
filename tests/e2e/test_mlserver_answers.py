"""MLServer 1.7.1's recorded answers (``tests/formats/mlserver/mlserver_answers.json``), replayed against
a real servekit process serving the same repository, in the recording's order, over real sockets.

Every status code must be MLServer's but for the differences kept on purpose (``KEPT``, explained in
``tests/formats/mlserver/README.md``); inference answers must carry MLServer's outputs, names,
datatypes, shapes and values; metadata of declared tensors, the repository index's states and the
error documents' ``error`` field must be MLServer's too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servekit.grpc.generated import inference_pb2
from tests.formats.mlserver.record_answers import CALLS, GRPC_AS_HTTP, GRPC_CALLS, call_grpc, send
from tests.formats.mlserver.repository import ANSWERS, build

from .harness import ServerProcess

RECORDED: list[dict[str, Any]] = json.loads(ANSWERS.read_text())["answers"]
GRPC_RECORDED: list[dict[str, Any]] = json.loads(ANSWERS.read_text())["grpc_answers"]
# call -> servekit's status where it answers otherwise on purpose (see the README's list).
KEPT = {
    "infer_wrong_width": 400,  # MLServer 500: the estimator raised; servekit checks the shape first
    "infer_shape_data_mismatch": 400,
    "infer_one_dimensional": 400,
    "infer_strings_as_fp32": 400,
    "infer_unknown_datatype": 400,  # MLServer 422 (FastAPI's validation document)
    "infer_missing_inputs_field": 400,
    "infer_invalid_json": 400,
    "unloaded_ready": 503,  # MLServer 404: it forgets an unloaded model; servekit keeps it, not ready
    "unloaded_infer": 503,
    # Tables: MLServer 500 (the estimator's or pandas' error); servekit 400 naming the column or the estimator's reason.
    "infer_table_missing_column": 400,
    "infer_table_strings_where_numbers_go": 400,
    "infer_table_numbers_where_strings_go": 400,
    "infer_table_no_rows": 400,
    "infer_table_no_columns": 400,
    "infer_table_digits_one_column": 400,
    # MLServer 200: pandas pads the shorter column with NaN, or reads a [3, 2] column as six rows.
    "infer_table_unequal_columns": 400,
    "infer_table_wide_column": 400,
    # MLServer 500 (AttributeError): an output the estimator has no method for is an unknown output here.
    "infer_transform_then_predict": 400,
    "infer_transform_of_a_pipeline_without_it": 400,
    "infer_transform_of_a_classifier": 400,
}
# The same for gRPC status codes.
GRPC_KEPT = {
    "infer_wrong_width": "INVALID_ARGUMENT",  # MLServer INTERNAL: the estimator's ValueError
    "model_ready_unknown": "NOT_FOUND",  # MLServer UNKNOWN ("Unexpected <class 'mlserver.errors.ModelNotFound'>")
    "infer_table_missing_column": "INVALID_ARGUMENT",
    "infer_transform_of_a_classifier": "INVALID_ARGUMENT",
}


@pytest.fixture(scope="module")
def both_answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """servekit's answer to every recorded call, made in the recording's order: (HTTP, gRPC)."""
    root = build(tmp_path_factory.mktemp("mlserver") / "models")
    process = ServerProcess(root, tmp_path_factory.mktemp("logs") / "server.log", "--repository-control", "open")
    process.start()
    try:
        grpc_answers = {entry["name"]: call_grpc(process.grpc_port, entry, inference_pb2) for entry in GRPC_CALLS}
        yield {entry["name"]: send(process.port, entry) for entry in CALLS}, grpc_answers
    finally:
        process.stop()


@pytest.fixture(scope="module")
def answers(both_answers: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return both_answers[0]


@pytest.fixture(scope="module")
def grpc_answers(both_answers: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return both_answers[1]


def test_the_recording_and_the_calls_are_the_same() -> None:
    assert [(e["name"], e["method"], e["path"], e.get("body")) for e in RECORDED] == \
        [(e["name"], e["method"], e["path"], e.get("body")) for e in CALLS]


@pytest.mark.parametrize("entry", RECORDED, ids=[entry["name"] for entry in RECORDED])
def test_the_status_code_is_mlservers(entry: dict[str, Any], answers: dict[str, dict[str, Any]]) -> None:
    ours = answers[entry["name"]]
    assert ours["status"] == KEPT.get(entry["name"], entry["response"]["status"]), ours["body"]


def _outputs(body: str) -> dict[str, tuple[str, list[int], list[Any]]]:
    return {out["name"]: (out["datatype"], out["shape"], out["data"]) for out in json.loads(body)["outputs"]}


INFERRED = [e for e in RECORDED if e["name"].startswith("infer") and e["response"]["status"] == 200
            and e["name"] not in KEPT]


@pytest.mark.parametrize("entry", INFERRED, ids=[entry["name"] for entry in INFERRED])
def test_an_inference_answer_carries_mlservers_outputs(entry: dict[str, Any],
                                                       answers: dict[str, dict[str, Any]]) -> None:
    theirs, ours = json.loads(entry["response"]["body"]), json.loads(answers[entry["name"]]["body"])
    assert ours["model_name"] == theirs["model_name"]
    assert ours.get("model_version", "1") == theirs.get("model_version", "1")  # v1: the settings' version
    if json.loads(entry["body"]).get("id"):
        assert ours["id"] == theirs["id"]
    expected, got = _outputs(entry["response"]["body"]), _outputs(answers[entry["name"]]["body"])
    assert list(got) == list(expected)
    for name, (datatype, shape, data) in expected.items():
        assert got[name][:2] == (datatype, shape), name
        assert got[name][2] == pytest.approx(data, rel=1e-6, abs=1e-12), name


def test_declared_tensors_are_described_as_the_settings_declare_them(answers: dict[str, dict[str, Any]]) -> None:
    theirs = json.loads(next(e for e in RECORDED if e["name"] == "model_metadata_declared")["response"]["body"])
    ours = json.loads(answers["model_metadata_declared"]["body"])
    assert (ours["name"], ours["inputs"], ours["outputs"]) == (theirs["name"], theirs["inputs"], theirs["outputs"])


def test_undeclared_tensors_are_described_as_servekit_answers_them(answers: dict[str, dict[str, Any]]) -> None:
    """MLServer lists no tensors for a model whose settings declare none; servekit derives them."""
    ours = json.loads(answers["model_metadata"]["body"])
    assert ours["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
                               {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 10]}]
    assert ours["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]


@pytest.mark.parametrize("name", ["repository_index", "repository_index_ready", "repository_index_after_unload"])
def test_the_repository_index_has_mlservers_states(name: str, answers: dict[str, dict[str, Any]]) -> None:
    theirs = json.loads(next(e for e in RECORDED if e["name"] == name)["response"]["body"])
    ours = json.loads(answers[name]["body"])
    assert sorted((row["name"], row["state"]) for row in ours) == sorted((row["name"], row["state"]) for row in theirs)


FAILED = [e for e in RECORDED if e["response"]["status"] >= 400 and e["name"] != "unloaded_ready"]


def test_an_unloaded_model_is_known_but_not_ready(answers: dict[str, dict[str, Any]]) -> None:
    assert json.loads(answers["unloaded_ready"]["body"]) == {"name": "declared", "ready": False}
    assert "not ready: unloaded" in json.loads(answers["unloaded_infer"]["body"])["error"]


@pytest.mark.parametrize("entry", FAILED, ids=[entry["name"] for entry in FAILED])
def test_an_error_is_a_json_document_with_an_error_message(entry: dict[str, Any],
                                                          answers: dict[str, dict[str, Any]]) -> None:
    ours = answers[entry["name"]]
    assert ours["content_type"] == entry["response"]["content_type"] == "application/json"
    assert isinstance(json.loads(ours["body"])["error"], str) and json.loads(ours["body"])["error"]


def test_the_recording_is_mlserver_1_7_1() -> None:
    assert json.loads(Path(ANSWERS).read_text())["mlserver"] == "1.7.1"


def test_the_grpc_recording_and_the_calls_are_the_same() -> None:
    assert [(e["name"], e["method"], e["request"]) for e in GRPC_RECORDED] == \
        [(e["name"], e["method"], e["request"]) for e in GRPC_CALLS]


@pytest.mark.parametrize("entry", GRPC_RECORDED, ids=[entry["name"] for entry in GRPC_RECORDED])
def test_the_grpc_status_code_is_mlservers(entry: dict[str, Any], grpc_answers: dict[str, dict[str, Any]]) -> None:
    ours = grpc_answers[entry["name"]]
    assert ours["code"] == GRPC_KEPT.get(entry["name"], entry["response"]["code"]), ours


_CONTENTS = {"INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}
_RAW = {"INT64": "<i8", "FP32": "<f4", "FP64": "<f8"}


def _grpc_outputs(message: dict[str, Any]) -> dict[str, tuple[str, list[int], list[float]]]:
    """Each output's datatype, shape and values, whether sent as contents or as raw_output_contents."""
    raw = [base64.b64decode(blob) for blob in message.get("raw_output_contents", [])]
    found = {}
    for index, output in enumerate(message["outputs"]):
        datatype = output["datatype"]
        if raw:
            values = np.frombuffer(raw[index], dtype=_RAW[datatype]).tolist()
        else:
            values = [float(value) for value in output["contents"][_CONTENTS[datatype]]]
        found[output["name"]] = (datatype, [int(n) for n in output["shape"]], values)
    return found


GRPC_INFERRED = [e for e in GRPC_RECORDED if e["method"] == "ModelInfer" and e["response"]["code"] == "OK"]


@pytest.mark.parametrize("entry", GRPC_INFERRED, ids=[entry["name"] for entry in GRPC_INFERRED])
def test_a_grpc_inference_answer_carries_mlservers_outputs(entry: dict[str, Any],
                                                           grpc_answers: dict[str, dict[str, Any]]) -> None:
    """The outputs of MLServer's gRPC answer; for a table with strings (GRPC_AS_HTTP), those of its HTTP answer to
    the same table: MLServer's gRPC hands the estimator bytes where its HTTP hands it strings."""
    theirs, ours = entry["response"]["message"], grpc_answers[entry["name"]]["message"]
    assert (ours["model_name"], ours.get("model_version", "1")) == (theirs["model_name"],
                                                                    theirs.get("model_version", "1"))
    expected, got = _grpc_outputs(theirs), _grpc_outputs(ours)
    if entry["name"] in GRPC_AS_HTTP:
        over_http = _outputs(next(e for e in RECORDED if e["name"] == entry["name"])["response"]["body"])
        assert {name: value[:2] for name, value in over_http.items()} == {name: value[:2] for name, value in
                                                                          expected.items()}
        expected = {name: (datatype, shape, [float(v) for v in data]) for name, (datatype, shape, data) in
                    over_http.items()}
    assert list(got) == list(expected)
    for name, (datatype, shape, data) in expected.items():
        assert got[name][:2] == (datatype, shape), name
        assert got[name][2] == pytest.approx(data, rel=1e-6, abs=1e-12), name


def test_grpc_health_metadata_and_index_are_mlservers(grpc_answers: dict[str, dict[str, Any]]) -> None:
    recorded = {entry["name"]: entry["response"] for entry in GRPC_RECORDED}
    for name in ("server_live", "server_ready", "model_ready"):
        assert grpc_answers[name]["message"] == recorded[name]["message"], name
    theirs, ours = recorded["model_metadata_declared"]["message"], grpc_answers["model_metadata_declared"]["message"]
    assert (ours["inputs"], ours["outputs"]) == (theirs["inputs"], theirs["outputs"])
    # MLServer writes its state enum as "State.READY" over gRPC (and "READY" over HTTP); servekit "READY".
    rows = recorded["repository_index"]["message"]["models"]
    index = {(row["name"], row["state"].removeprefix("State.")) for row in rows}
    assert {(row["name"], row["state"]) for row in grpc_answers["repository_index"]["message"]["models"]} == index


@pytest.mark.parametrize(("name", "said"), [
    ("infer_table_missing_column", "the estimator cannot read these columns: ValueError: columns are missing: "
                                   "{'color'}"),
    ("infer_table_strings_where_numbers_go", "could not convert string to float: 'a'"),
    ("infer_table_unequal_columns", "column 'color' has 2 rows; column 'age' has 3"),
    ("infer_table_wide_column", "column 'age' has shape [3, 2]; a column is one value per row"),
    ("infer_table_no_rows", "the table has no rows"),
    ("infer_table_no_columns", "'inputs' must be a non-empty list"),  # the OIP codec's check, before any table
    ("infer_transform_of_a_classifier", "model 'digits' has no output named 'transform'; its outputs are predict, "
                                        "predict_proba"),
    ("infer_transform_then_predict", "model 'columns' has no output named 'predict'; its outputs are transform"),
])
def test_a_table_or_output_servekit_refuses_is_named_in_the_error(name: str, said: str,
                                                                  answers: dict[str, dict[str, Any]]) -> None:
    """The differences kept on purpose: a 400 whose message says what was wrong with the request."""
    assert answers[name]["status"] == 400
    assert said in json.loads(answers[name]["body"])["error"]
