"""The python backend runtime driven directly: a model.py written here, requests handed to it."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from servekit.config import ModelConfig
from servekit.errors import ConfigError, InvalidInput, ModelNotFound, ModelNotReady, ServekitError
from servekit.formats.triton.python_backend import TritonPythonRuntime
from servekit.runtimes import RuntimeContext, create_runtime
from servekit.runtimes.base import RuntimeRequest
from servekit.serving.entry import read_model_config

CONFIG = """
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] },
        { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] optional: true } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { }
parameters: { key: "scale" value: { string_value: "3" } }
"""

MODEL = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        config = json.loads(args["model_config"])
        self.scale = float(config["parameters"]["scale"]["string_value"])
        self.calls = []

    def execute(self, requests):
        self.calls.append(len(requests))
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if np.any(x == 13):
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("13 is not welcome", pb_utils.TritonError.INVALID_ARG)))
                continue
            if np.any(x == 14):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("no code")))
                continue
            if np.any(x == 17):
                raise RuntimeError("the whole batch fails")
            text = pb_utils.get_input_tensor_by_name(request, "TEXT")
            info = json.dumps({"parameters": request.parameters(), "id": request.request_id(), "calls": self.calls,
                               "requested": sorted(request.requested_output_names()),
                               "text": None if text is None else [v.decode() for v in text.as_numpy().ravel()]})
            rows = x.shape[0]
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("Y", x * self.scale),
                pb_utils.Tensor("INFO", np.array([[info.encode()]] * rows, dtype=np.object_)),
            ]))
        return responses

    def finalize(self):
        with open(self.args["model_repository"] + "/finalized.txt", "a") as f:
            f.write(self.args["model_instance_name"] + "\\n")
'''


def _model_dir(root: Path, config: str = CONFIG, model: str = MODEL, name: str = "pymodel") -> Path:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config))
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(model))
    return model_dir


def _runtime(model_dir: Path, instance: int = 0) -> TritonPythonRuntime:
    context = RuntimeContext(model_dir.name, 1, model_dir, model_dir / "1", read_model_config(model_dir), instance)
    runtime = create_runtime(context.config.runtime or "", context)
    assert isinstance(runtime, TritonPythonRuntime)
    runtime.load()
    return runtime


def _request(x: list[list[float]], **kwargs: object) -> RuntimeRequest:
    return RuntimeRequest({"X": np.array(x, dtype=np.float32)}, **kwargs)  # type: ignore[arg-type]


def _info(outputs: object) -> dict[str, object]:
    assert isinstance(outputs, dict)
    return json.loads(outputs["INFO"][0][0])  # type: ignore[no-any-return]


def test_initialize_gets_tritons_args_all_strings(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    first, second = _runtime(model_dir), _runtime(model_dir, instance=1)
    args = first._model.args
    assert {key: value for key, value in args.items() if key != "model_config"} == {
        "model_instance_kind": "CPU", "model_instance_name": "pymodel_0_0", "model_instance_device_id": "0",
        "model_repository": str(model_dir), "model_version": "1", "model_name": "pymodel"}
    assert second._model.args["model_instance_name"] == "pymodel_0_1"
    config = json.loads(args["model_config"])
    assert config["name"] == "pymodel" and config["max_batch_size"] == 4 and config["backend"] == "python"
    assert config["input"][1] == {"name": "TEXT", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1],
                                  "is_shape_tensor": False, "allow_ragged_batch": False, "optional": True,
                                  "is_non_linear_format_io": False}
    assert config["instance_group"] == [{"name": "pymodel_0", "kind": "KIND_CPU", "count": 2, "gpus": [],
                                         "profile": [], "passive": False, "host_policy": ""}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    assert config["default_model_filename"] == "model.py" and config["parameters"] == {"scale": {"string_value": "3"}}


def test_requests_of_a_batch_reach_one_execute_each_answered_on_its_own(tmp_path: Path) -> None:
    runtime = _runtime(_model_dir(tmp_path))
    answers = runtime.predict_requests([
        _request([[1, 2]], parameters={"mode": "fast", "n": 2, "binary_data_output": True}, id="a"),
        _request([[13, 0]]),
        _request([[3, 4], [5, 6]], requested_outputs=("Y",)),
        _request([[14, 0]]),
    ])
    assert runtime._model.calls == [4]
    first, invalid, third, plain = answers
    assert isinstance(first, dict) and first["Y"].tolist() == [[3.0, 6.0]]
    assert _info(first) == {"parameters": '{"mode":"fast","n":2}', "requested": ["INFO", "Y"], "id": "a",
                            "calls": [4], "text": None}
    assert isinstance(invalid, InvalidInput) and invalid.message == "13 is not welcome"
    assert isinstance(third, dict) and third["Y"].shape == (2, 2) and _info(third)["requested"] == ["Y"]
    assert type(plain) is ServekitError and plain.http_status == 500 and plain.message == "no code"


def test_error_codes_map_to_servekits_table() -> None:
    from servekit.formats.triton import pb_utils
    from servekit.formats.triton.python_backend import servekit_error

    cases = {pb_utils.TritonError.INVALID_ARG: 400, pb_utils.TritonError.NOT_FOUND: 404,
             pb_utils.TritonError.UNAVAILABLE: 503, pb_utils.TritonError.INTERNAL: 500,
             pb_utils.TritonError.UNKNOWN: 400, pb_utils.TritonError.ALREADY_EXISTS: 400,
             pb_utils.TritonError.UNSUPPORTED: 501, pb_utils.TritonError.CANCELLED: 400}  # as tritonserver 2.51
    assert {code: servekit_error(pb_utils.TritonError("m", code)).http_status for code in cases} == cases
    assert isinstance(servekit_error(pb_utils.TritonError("m", 2)), ModelNotFound)
    assert isinstance(servekit_error(pb_utils.TritonError("m", 4)), ModelNotReady)
    grpc_codes = [servekit_error(pb_utils.TritonError("m", code)).grpc_code for code in range(8)]
    assert grpc_codes == ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARGUMENT", "UNAVAILABLE", "UNIMPLEMENTED",
                          "ALREADY_EXISTS", "CANCELLED"]


def test_an_exception_from_execute_fails_the_whole_batch(tmp_path: Path) -> None:
    runtime = _runtime(_model_dir(tmp_path))
    with pytest.raises(RuntimeError, match="the whole batch fails"):
        runtime.predict_requests([_request([[1, 2]]), _request([[17, 0]])])


def test_bytes_inputs_and_an_optional_input_left_out(tmp_path: Path) -> None:
    runtime = _runtime(_model_dir(tmp_path))
    text = np.array([[b"hello"]], dtype=np.object_)
    with_text, without = runtime.predict_requests([
        RuntimeRequest({"X": np.zeros((1, 2), np.float32), "TEXT": text}), _request([[0, 0]])])
    assert _info(with_text)["text"] == ["hello"] and _info(without)["text"] is None
    assert isinstance(with_text, dict) and with_text["INFO"].dtype == np.object_


def test_a_request_with_more_rows_than_max_batch_size_is_refused_alone(tmp_path: Path) -> None:
    runtime = _runtime(_model_dir(tmp_path))
    big, small = runtime.predict_requests([_request([[1, 1]] * 5), _request([[1, 1]])])
    assert isinstance(big, InvalidInput) and "batch-size must be <= 4 for 'pymodel'" in big.message
    assert isinstance(small, dict) and runtime._model.calls == [1]
    mixed = runtime.predict_requests([_request([[1, 1]]), _request([[2, 2]] * 5), _request([[3, 3]]),
                                      _request([[4, 4]] * 6), _request([[5, 5]] * 9)])
    assert [a["Y"][0][0] if isinstance(a, dict) else type(a) for a in mixed] == [  # each answer in its place
        3.0, InvalidInput, 9.0, InvalidInput, InvalidInput]
    assert runtime._model.calls == [1, 2]


def test_finalize_runs_at_unload(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    runtime = _runtime(model_dir)
    module_name = runtime._module_name
    assert module_name in sys.modules
    runtime.unload()
    assert (model_dir / "finalized.txt").read_text().split() == [runtime_name := "pymodel_0_0"] and runtime_name
    assert module_name not in sys.modules


def test_pb_utils_is_given_to_model_py_alone_and_never_shadows_a_real_module(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = types.ModuleType("triton_python_backend_utils")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", real)
    late_import = MODEL.replace("import triton_python_backend_utils as pb_utils\n", "").replace(
        "    def execute(self, requests):\n",
        "    def execute(self, requests):\n        import triton_python_backend_utils as pb_utils\n")
    runtime = _runtime(_model_dir(tmp_path, model=late_import))
    assert isinstance(runtime.predict_requests([_request([[1, 2]])])[0], dict)  # the layer, imported in execute
    assert sys.modules["triton_python_backend_utils"] is real
    monkeypatch.delitem(sys.modules, "triton_python_backend_utils")
    _runtime(_model_dir(tmp_path, name="again"))
    assert "triton_python_backend_utils" not in sys.modules


AUTO = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [2, 2]})
        auto_complete_model_config.set_max_batch_size(2)
        return auto_complete_model_config

    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                                                            .as_numpy())]) for r in requests]
'''


def test_auto_complete_config_declares_the_tensors(tmp_path: Path) -> None:
    config = 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 2 ] } } ]'
    model_dir = _model_dir(tmp_path, config=config + '\noutput [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ]'
                           ' reshape { shape: [ 2, 2 ] } } ]', model=AUTO.replace('"dims": [2, 2]', '"dims": [4]'))
    runtime = _runtime(model_dir)
    completed = json.loads(runtime._model.args["model_config"])
    assert completed["max_batch_size"] == 2 and [t["name"] for t in completed["input"]] == ["IN"]
    servekit_config = runtime.context.config
    assert servekit_config.inputs and servekit_config.inputs[0].shape == [-1, 4]
    # reshape: the model sees [rows, 2, 2] and the client gets [rows, 4] back
    (answer,) = runtime.predict_requests([RuntimeRequest({"IN": np.arange(8, dtype=np.float32).reshape(2, 4)})])
    assert isinstance(answer, dict) and answer["OUT"].shape == (2, 4) and answer["OUT"][1].tolist() == [4, 5, 6, 7]


def test_decoupled_models_are_refused_at_load(tmp_path: Path) -> None:
    decoupled = AUTO.replace("        return auto_complete_model_config\n",
                             "        auto_complete_model_config.set_model_transaction_policy({'decoupled': True})\n"
                             "        return auto_complete_model_config\n")
    model_dir = _model_dir(tmp_path, config='backend: "python"', model=decoupled)
    before = set(sys.modules)
    with pytest.raises(ConfigError, match="decoupled models"):
        read_model_config(model_dir)  # auto-complete at config read already says so
    with pytest.raises(ConfigError, match="decoupled models"):
        context = RuntimeContext("pymodel", 1, model_dir, model_dir / "1", ModelConfig(runtime="triton_python"))
        TritonPythonRuntime(context).load()  # and so does the runtime, were it handed the model anyway
    assert set(sys.modules) == before  # the model's module does not stay behind
    in_config = _model_dir(tmp_path, config='backend: "python"\nmodel_transaction_policy { decoupled: true }',
                           name="other")
    with pytest.raises(ConfigError, match="decoupled models"):
        read_model_config(in_config)


def test_a_model_file_without_the_class_is_a_clear_error(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path, model="class Model:\n    pass\n")
    with pytest.raises(ImportError, match="no class TritonPythonModel"):
        _runtime(model_dir)
