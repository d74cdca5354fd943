"""Record what a real MLServer answers into ``mlserver_answers.json``.

Not a test: the recording ``tests/e2e/test_mlserver_answers.py`` replays against servekit. It was
made with MLServer 1.7.1 and mlserver-sklearn 1.7.1 (there is no mlserver-onnx on PyPI: MLServer
has no ONNX runtime), scikit-learn, numpy, pandas and joblib pinned to servekit's, Python 3.11, like this::

    python3 -m venv /tmp/mlserver-venv
    /tmp/mlserver-venv/bin/pip install mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop==0.21.0 \\
        scikit-learn==1.9.1 numpy==2.4.6 pandas==3.1.1 joblib==1.6.0
    cd REPO_ROOT   # this checkout, so that ``tests.formats.mlserver`` imports
    /tmp/mlserver-venv/bin/python -m tests.formats.mlserver.record_answers build /tmp/mlsrec
    MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT=18080 MLSERVER_GRPC_PORT=18081 MLSERVER_METRICS_PORT=18082 \\
        setsid /tmp/mlserver-venv/bin/mlserver start /tmp/mlsrec &
    /tmp/mlserver-venv/bin/python -m tests.formats.mlserver.record_answers record 18080 18081 \\
        tests/formats/mlserver/mlserver_answers.json
    kill -- -PID_OF_MLSERVER

A new recording differs from the last only where MLServer's answers do, and in the ``VARIABLE``
parts (the UUIDs): keep the earlier entry of each call answered the same but for those, so that
the diff shows what changed. Each HTTP call is sent as written in ``CALLS``; the answers keep
status, reason, content-type and body. Each gRPC call of ``GRPC_CALLS`` is built with MLServer's
own generated messages and kept as protobuf JSON (or the status code and details).
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
from pathlib import Path
from typing import Any

from tests.formats.mlserver.repository import build, rows

__all__ = ["CALLS", "GRPC_AS_HTTP", "GRPC_CALLS", "TABLE_ROWS", "calls"]

VARIABLE = [
    "the id of an infer answer when the request named none (MLServer makes a UUID per request)",
    "the id of a gRPC infer answer (MLServer makes a UUID per request)",
    "date, server and content-length headers (only content-type is kept)",
]


def _infer_body(name: str = "predict", outputs: list[str] | None = None, datatype: str = "FP32",
                **extra: Any) -> dict[str, Any]:
    data = rows()
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(data.shape),
                              "data": data.ravel().tolist()}
    tensor.update(extra.pop("tensor", {}))
    body: dict[str, Any] = {"inputs": [tensor], **extra}
    if outputs is not None:
        body["outputs"] = [{"name": output} for output in outputs]
    return body


# The rows every table request sends (MLServer's pandas codec: one input per column).
TABLE_ROWS: dict[str, list[Any]] = {"age": [25.0, 50.0, 60.0], "color": ["red", "blue", "green"]}
PANDAS = {"content_type": "pd"}


def _column(name: str, datatype: str | None = None, **fields: Any) -> dict[str, Any]:
    """One column of TABLE_ROWS as an input: FP64 ages, BYTES colors, shape [3, 1], unless told otherwise."""
    data = fields.pop("data", TABLE_ROWS.get(name, TABLE_ROWS["age"]))
    if datatype is None:
        datatype = "BYTES" if isinstance(data[0], str) else "FP64"
    return {"name": name, "datatype": datatype, "shape": fields.pop("shape", [len(data), 1]),
            "data": data, **fields}


def _table_body(*columns: dict[str, Any], outputs: list[str] | None = None,
                parameters: dict[str, Any] | None = PANDAS) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": list(columns or (_column("age"), _column("color")))}
    if parameters is not None:
        body["parameters"] = parameters
    if outputs is not None:
        body["outputs"] = [{"name": output} for output in outputs]
    return body


def _table_calls(call: Any) -> list[dict[str, Any]]:
    """Items 1 and 2 of the comparison: tables (content_type pd) and the transform output."""
    tabular, columns = "/v2/models/tabular/infer", "/v2/models/columns/infer"
    age, color = _column("age"), _column("color")
    row = [0.5] * 64
    return [
        call("infer_table", "POST", tabular, _table_body()),
        call("infer_table_both", "POST", tabular, _table_body(outputs=["predict", "predict_proba"])),
        call("infer_table_one_dimensional", "POST", tabular,
             _table_body(_column("age", shape=[3]), _column("color", shape=[3]))),
        call("infer_table_row_vectors", "POST", tabular,
             _table_body(_column("age", shape=[1, 3]), _column("color", shape=[1, 3]))),
        call("infer_table_reordered", "POST", tabular, _table_body(color, age)),
        call("infer_table_extra_column", "POST", tabular, _table_body(age, color, _column("height"))),
        call("infer_table_int64_column", "POST", tabular, _table_body(_column("age", "INT64", data=[25, 50, 60]),
                                                                      color)),
        call("infer_table_fp32_column", "POST", tabular, _table_body(_column("age", "FP32"), color)),
        call("infer_table_numbers_as_strings", "POST", tabular,
             _table_body(_column("age", data=["25", "50", "60"]), color)),
        call("infer_table_unknown_category", "POST", tabular,
             _table_body(age, _column("color", data=["red", "pink", "blue"]))),
        call("infer_table_missing_column", "POST", tabular, _table_body(age)),
        call("infer_table_strings_where_numbers_go", "POST", tabular,
             _table_body(_column("age", data=["a", "b", "c"]), color)),
        call("infer_table_numbers_where_strings_go", "POST", tabular,
             _table_body(age, _column("color", data=[1.0, 2.0, 3.0]))),
        call("infer_table_unequal_columns", "POST", tabular,
             _table_body(age, _column("color", data=["red", "blue"]))),
        call("infer_table_wide_column", "POST", tabular,
             _table_body(_column("age", shape=[3, 2], data=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), color)),
        call("infer_table_no_rows", "POST", tabular,
             _table_body(_column("age", "FP64", shape=[0, 1], data=[]),
                         _column("color", "BYTES", shape=[0, 1], data=[]))),
        call("infer_table_no_columns", "POST", tabular, {"parameters": PANDAS, "inputs": []}),
        call("infer_table_content_type_on_inputs", "POST", tabular,
             _table_body(dict(age, parameters=PANDAS), dict(color, parameters=PANDAS), parameters=None)),
        call("infer_table_without_content_type", "POST", tabular, _table_body(parameters=None)),
        call("infer_table_content_type_np", "POST", tabular, _table_body(parameters={"content_type": "np"})),
        call("infer_table_settings_pd", "POST", "/v2/models/tabular_pd/infer", _table_body(parameters=None)),
        call("infer_table_settings_pd_request_np", "POST", "/v2/models/tabular_pd/infer",
             _table_body(parameters={"content_type": "np"})),
        call("infer_table_digits_columns", "POST", "/v2/models/digits/infer",
             _table_body(*(_column(f"pixel{i}", "FP32", data=[0.5, 0.1]) for i in range(64)))),
        call("infer_table_digits_one_column", "POST", "/v2/models/digits/infer",
             _table_body(_column("pixels", "FP32", shape=[1, 64], data=row))),
        call("infer_transform_default", "POST", columns, _table_body()),
        call("infer_transform", "POST", columns, _table_body(outputs=["transform"])),
        call("infer_transform_then_predict", "POST", columns, _table_body(outputs=["predict"])),
        call("infer_transform_then_predict_proba", "POST", columns, _table_body(outputs=["predict_proba"])),
        call("infer_transform_of_a_pipeline_without_it", "POST", tabular, _table_body(outputs=["transform"])),
        call("infer_transform_of_a_classifier", "POST", "/v2/models/digits/infer",
             _infer_body(outputs=["transform"])),
        call("infer_transform_numpy", "POST", "/v2/models/scaler/infer", _infer_body(outputs=["transform"])),
        call("infer_transform_numpy_default", "POST", "/v2/models/scaler/infer", _infer_body()),
    ]


def calls() -> list[dict[str, Any]]:
    """(name, method, path, JSON body or raw text) of every call, in the order they are made."""
    infer = "/v2/models/digits/infer"

    def call(name: str, method: str, path: str, body: Any = None, raw: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "method": method, "path": path}
        if body is not None:
            entry["body"] = json.dumps(body)
        if raw is not None:
            entry["body"] = raw
        return entry

    return [
        call("health_live", "GET", "/v2/health/live"),
        call("health_ready", "GET", "/v2/health/ready"),
        call("server_metadata", "GET", "/v2"),
        call("model_metadata", "GET", "/v2/models/digits"),
        call("model_metadata_version", "GET", "/v2/models/digits/versions/v1"),
        call("model_metadata_declared", "GET", "/v2/models/declared"),
        call("model_metadata_unknown", "GET", "/v2/models/nope"),
        call("model_metadata_unknown_version", "GET", "/v2/models/digits/versions/v9"),
        call("model_ready", "GET", "/v2/models/digits/ready"),
        call("model_ready_version", "GET", "/v2/models/digits/versions/v1/ready"),
        call("model_ready_unknown", "GET", "/v2/models/nope/ready"),
        call("repository_index", "POST", "/v2/repository/index", {}),
        call("repository_index_ready", "POST", "/v2/repository/index", {"ready": True}),
        call("infer_default_outputs", "POST", infer, _infer_body()),
        call("infer_predict", "POST", infer, _infer_body(outputs=["predict"])),
        call("infer_predict_proba", "POST", infer, _infer_body(outputs=["predict_proba"])),
        call("infer_both", "POST", infer, _infer_body(outputs=["predict", "predict_proba"])),
        call("infer_with_id", "POST", infer, _infer_body(outputs=["predict"], id="req-1")),
        call("infer_any_input_name", "POST", infer, _infer_body(name="whatever", outputs=["predict"])),
        call("infer_declared_other_input_name", "POST", "/v2/models/declared/infer",
             _infer_body(name="x", outputs=["predict"])),
        call("infer_declared", "POST", "/v2/models/declared/infer", _infer_body(name="pixels")),
        call("infer_content_type_np_input", "POST", infer,
             _infer_body(outputs=["predict"], tensor={"parameters": {"content_type": "np"}})),
        call("infer_content_type_np_request", "POST", infer,
             _infer_body(outputs=["predict"], parameters={"content_type": "np"})),
        call("infer_version", "POST", "/v2/models/digits/versions/v1/infer", _infer_body(outputs=["predict"])),
        call("infer_unknown_version", "POST", "/v2/models/digits/versions/v9/infer", _infer_body()),
        call("infer_unknown_model", "POST", "/v2/models/nope/infer", _infer_body()),
        call("infer_unknown_output", "POST", infer, _infer_body(outputs=["label"])),
        call("infer_wrong_width", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 3], "data": [0.0, 0.5, 1.0]}]}),
        call("infer_shape_data_mismatch", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [2, 64], "data": [0.0] * 64}]}),
        call("infer_one_dimensional", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [64], "data": [0.0] * 64}]}),
        call("infer_int64_data", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "INT64", "shape": [1, 64], "data": [0] * 64}]}),
        call("infer_fp64_data", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 64], "data": [0.0] * 64}]}),
        call("infer_unknown_datatype", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "FLOAT", "shape": [1, 64], "data": [0.0] * 64}]}),
        call("infer_strings_as_fp32", "POST", infer,
             {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 2], "data": ["a", "b"]}]}),
        call("infer_two_inputs", "POST", infer,
             {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64},
                         {"name": "b", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}),
        call("infer_no_inputs", "POST", infer, {"inputs": []}),
        call("infer_missing_inputs_field", "POST", infer, {"outputs": [{"name": "predict"}]}),
        call("infer_invalid_json", "POST", infer, raw='{"inputs": ['),
        call("unload", "POST", "/v2/repository/models/declared/unload", {}),
        call("unloaded_ready", "GET", "/v2/models/declared/ready"),
        call("unloaded_infer", "POST", "/v2/models/declared/infer", _infer_body(name="pixels")),
        call("repository_index_after_unload", "POST", "/v2/repository/index", {}),
        call("load", "POST", "/v2/repository/models/declared/load", {}),
        call("loaded_ready", "GET", "/v2/models/declared/ready"),
        call("unload_unknown", "POST", "/v2/repository/models/nope/unload", {}),
        call("load_unknown", "POST", "/v2/repository/models/nope/load", {}),
        *_table_calls(call),
    ]


CALLS = calls()


def _grpc_infer(name: str = "predict", outputs: list[str] | None = None, model: str = "digits", version: str = "",
                datatype: str = "FP32", width: int = 64) -> dict[str, Any]:
    data = rows()[:, :width]
    field = {"FP32": "fp32_contents", "INT64": "int64_contents"}[datatype]
    values = data.ravel().tolist() if datatype == "FP32" else [int(v) for v in data.ravel()]
    request: dict[str, Any] = {"model_name": model, "model_version": version,
                               "inputs": [{"name": name, "datatype": datatype, "shape": list(data.shape),
                                           "contents": {field: values}}]}
    if outputs is not None:
        request["outputs"] = [{"name": output} for output in outputs]
    return request


def grpc_calls() -> list[dict[str, Any]]:
    """(name, GRPCInferenceService method, request as protobuf JSON with the proto's field names)."""
    def call(name: str, method: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "method": method, "request": request}

    return [
        call("server_live", "ServerLive", {}),
        call("server_ready", "ServerReady", {}),
        call("model_ready", "ModelReady", {"name": "digits"}),
        call("model_ready_unknown", "ModelReady", {"name": "nope"}),
        call("model_metadata_declared", "ModelMetadata", {"name": "declared"}),
        call("model_metadata_unknown", "ModelMetadata", {"name": "nope"}),
        call("infer_default_outputs", "ModelInfer", _grpc_infer()),
        call("infer_any_input_name", "ModelInfer", _grpc_infer(name="whatever")),
        call("infer_both", "ModelInfer", _grpc_infer(outputs=["predict", "predict_proba"])),
        call("infer_int64_data", "ModelInfer", _grpc_infer(datatype="INT64")),
        call("infer_version", "ModelInfer", _grpc_infer(version="v1")),
        call("infer_declared", "ModelInfer", _grpc_infer(name="pixels", model="declared")),
        call("infer_unknown_output", "ModelInfer", _grpc_infer(outputs=["label"])),
        call("infer_unknown_model", "ModelInfer", _grpc_infer(model="nope")),
        call("infer_unknown_version", "ModelInfer", _grpc_infer(version="v9")),
        call("infer_wrong_width", "ModelInfer", _grpc_infer(width=3)),
        call("repository_index", "RepositoryIndex", {}),
        call("infer_table_both", "ModelInfer", _grpc_table("tabular", outputs=["predict", "predict_proba"])),
        call("infer_table_settings_pd", "ModelInfer", _grpc_table("tabular_pd", parameters={})),
        call("infer_table_digits_columns", "ModelInfer", _grpc_digits_columns()),
        call("infer_table_missing_column", "ModelInfer", _grpc_table("tabular", columns=("age",))),
        call("infer_transform_default", "ModelInfer", _grpc_table("columns")),
        call("infer_transform_numpy", "ModelInfer", _grpc_infer(model="scaler", outputs=["transform"])),
        call("infer_transform_of_a_classifier", "ModelInfer", _grpc_infer(outputs=["transform"])),
    ]


# gRPC table calls whose values servekit takes from the HTTP call of the same name, not from MLServer's
# gRPC answer: over gRPC MLServer hands the estimator BYTES columns as bytes, which a OneHotEncoder
# fitted on strings takes for unknown categories (see the README).
GRPC_AS_HTTP = ("infer_table_both", "infer_table_settings_pd", "infer_transform_default")


def _grpc_table(model: str, outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
                columns: tuple[str, ...] = ("age", "color")) -> dict[str, Any]:
    """TABLE_ROWS as a gRPC request, content_type pd unless ``parameters`` say otherwise (BYTES base64, as
    protobuf JSON writes bytes)."""
    inputs = []
    for name in columns:
        values = TABLE_ROWS[name]
        if isinstance(values[0], str):
            contents = {"bytes_contents": [base64.b64encode(value.encode()).decode() for value in values]}
            datatype = "BYTES"
        else:
            contents, datatype = {"fp64_contents": values}, "FP64"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(values), 1], "contents": contents})
    request: dict[str, Any] = {"model_name": model, "inputs": inputs}
    wanted = {"content_type": {"string_param": "pd"}} if parameters is None else parameters
    if wanted:
        request["parameters"] = wanted
    if outputs is not None:
        request["outputs"] = [{"name": output} for output in outputs]
    return request


def _grpc_digits_columns() -> dict[str, Any]:
    """The digits rows as 64 FP32 columns of a table."""
    data = rows()
    return {"model_name": "digits", "parameters": {"content_type": {"string_param": "pd"}},
            "inputs": [{"name": f"pixel{i}", "datatype": "FP32", "shape": [len(data), 1],
                        "contents": {"fp32_contents": data[:, i].tolist()}} for i in range(data.shape[1])]}


GRPC_CALLS = grpc_calls()


def send(port: int, entry: dict[str, Any]) -> dict[str, Any]:
    """One call over a fresh connection: status, reason, content-type and body of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"} if "body" in entry else {}
    connection.request(entry["method"], entry["path"], body=entry.get("body"), headers=headers)
    response = connection.getresponse()
    body = response.read().decode("utf-8")
    connection.close()
    return {"status": response.status, "reason": response.reason,
            "content_type": response.getheader("content-type"), "body": body}


def call_grpc(port: int, entry: dict[str, Any], messages: Any) -> dict[str, Any]:
    """One GRPCInferenceService call, ``messages`` the generated module of package ``inference`` to
    build it with (MLServer's dataplane_pb2 when recording, servekit's inference_pb2 when replaying):
    the answer as protobuf JSON, or the status code's name and details."""
    import grpc
    from google.protobuf import json_format

    request = json_format.ParseDict(entry["request"], getattr(messages, f"{entry['method']}Request")())
    answer_type = getattr(messages, f"{entry['method']}Response")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary(f"/inference.GRPCInferenceService/{entry['method']}",
                                     request_serializer=lambda message: message.SerializeToString(),
                                     response_deserializer=answer_type.FromString)
        try:
            answer = method(request, timeout=60)
        except grpc.RpcError as error:
            return {"code": error.code().name, "details": error.details()}
    return {"code": "OK", "message": json_format.MessageToDict(answer, preserving_proto_field_name=True)}


def record(port: int, out: Path, grpc_port: int) -> None:
    import mlserver
    import sklearn
    from mlserver.grpc import dataplane_pb2

    answers = []
    for entry in CALLS:
        answer = send(port, entry)
        print(entry["name"], answer["status"], answer["body"][:160])
        answers.append({**entry, "response": answer})
    grpc_answers = []
    for entry in GRPC_CALLS:
        answer = call_grpc(grpc_port, entry, dataplane_pb2)
        print("grpc", entry["name"], str(answer)[:160])
        grpc_answers.append({**entry, "response": answer})
    document = {"mlserver": mlserver.__version__, "scikit_learn": sklearn.__version__,
                "made_by": "tests/formats/mlserver/record_answers.py (its docstring has the commands)",
                "variable": VARIABLE, "answers": answers, "grpc_answers": grpc_answers}
    out.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]))
    elif sys.argv[1] == "record":
        record(int(sys.argv[2]), Path(sys.argv[4]), int(sys.argv[3]))
    else:
        raise SystemExit("usage: record_answers.py build REPO | record HTTP_PORT GRPC_PORT OUT.json")
