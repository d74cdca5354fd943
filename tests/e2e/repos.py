"""Model repositories for the end-to-end tests, written in code into a temporary folder.

Every model here is small and deterministic so tests can check exact values:

- ``identity``: a Python handler echoing one input per OIP datatype (IN_<DT> -> OUT_<DT>).
- ``onnx_linear``: an ONNX graph ``probs = softmax(x @ W)``, ``label = argmax(probs)``, two versions
  with different weights so a test can tell which version answered.
- ``broken``: a folder whose config.yaml does not validate.
- ``faulty``: a handler that raises when an input holds :data:`FAULTY_MAGIC`.
- ``slow``: a handler that sleeps per batch (graceful shutdown and batching tests).
- ``whoami``: a handler answering with its process id (multi-worker tests).
- ``gated``: echoes ``x`` once the test lets its batch through (tests/gate.py): tests wait for
  observable states (a batch at the gate, a queue depth) instead of sleeping for a head start.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tests.gate import GATE_HANDLER_CODE

__all__ = [
    "DATATYPES",
    "FAULTY_MAGIC",
    "ONNX_WEIGHTS",
    "build_main_repository",
    "onnx_expected",
    "write_broken_model",
    "write_faulty_model",
    "write_gated_model",
    "write_identity_model",
    "write_onnx_model",
    "write_slow_model",
    "write_whoami_model",
]

DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)

FAULTY_MAGIC = 13.0

# Version -> weights of the 4 x 3 MatMul; the two versions rank the classes differently.
ONNX_WEIGHTS: dict[int, np.ndarray[Any, Any]] = {
    1: np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]], dtype=np.float32),
    2: np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [-0.5, 0.5, 2.0]], dtype=np.float32),
}


def _write_config(model_dir: Path, config: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def _write_handler(model_dir: Path, source: str, versions: tuple[int, ...] = (1,)) -> None:
    (model_dir / "handler.py").write_text(textwrap.dedent(source), encoding="utf-8")
    for version in versions:
        (model_dir / str(version)).mkdir(exist_ok=True)


def write_identity_model(root: Path, name: str = "identity") -> Path:
    model_dir = root / name
    _write_config(model_dir, {
        "max_batch_size": 8,
        "inputs": [{"name": f"IN_{dt}", "datatype": dt, "shape": [-1, 3]} for dt in DATATYPES],
        "outputs": [{"name": f"OUT_{dt}", "datatype": dt, "shape": [-1, 3]} for dt in DATATYPES],
    })
    _write_handler(model_dir, '''
        from servekit import BaseHandler


        class Identity(BaseHandler):
            def inference(self, data):
                return {"OUT_" + name[len("IN_"):]: array for name, array in data.items()}
    ''')
    return model_dir


def write_faulty_model(root: Path, name: str = "faulty") -> Path:
    """One row per batch, so a failing request never shares a batch with a good one."""
    model_dir = root / name
    _write_config(model_dir, {
        "max_batch_size": 1,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    })
    _write_handler(model_dir, f'''
        import numpy as np

        from servekit import BaseHandler


        class Faulty(BaseHandler):
            def inference(self, data):
                x = data["x"]
                if np.any(x == {FAULTY_MAGIC!r}):
                    raise ValueError("unlucky input {FAULTY_MAGIC!r}\\nsecret traceback detail")
                return {{"y": x * 2}}
    ''')
    return model_dir


def write_slow_model(root: Path, name: str = "slow", delay_s: float = 0.5, marker: Path | None = None) -> Path:
    """Echoes ``x`` after sleeping ``delay_s`` per batch; appends each batch's size to ``marker``."""
    model_dir = root / name
    parameters: dict[str, Any] = {"delay_s": delay_s}
    if marker is not None:
        parameters["marker"] = str(marker)
    _write_config(model_dir, {
        "max_batch_size": 8,
        "batching": {"max_queue_delay_ms": 50},
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [-1, 1]}],
        "parameters": parameters,
    })
    _write_handler(model_dir, '''
        import time

        from servekit import BaseHandler


        class Slow(BaseHandler):
            def inference(self, data):
                marker = self.context.parameters.get("marker")
                if marker:
                    with open(marker, "a", encoding="utf-8") as f:
                        f.write(f"{len(data['x'])}\\n")
                time.sleep(float(self.context.parameters["delay_s"]))
                return {"y": data["x"]}
    ''')
    return model_dir


def write_gated_model(root: Path, gate: Path | str, name: str = "gated", batching: dict[str, Any] | None = None,
                      **config: Any) -> Path:
    """INT32 ``x`` [-1, 1] echoed as ``y``, up to 8 rows a batch, each batch held at ``gate`` until the test
    lets it through (tests/gate.py). ``batching`` and ``config``: more of config.yaml."""
    model_dir = root / name
    _write_config(model_dir, {
        "max_batch_size": 8,
        "batching": {"max_queue_delay_ms": 0, **(batching or {})},
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [-1, 1]}],
        "parameters": {"gate": str(gate)},
        **config,
    })
    _write_handler(model_dir, """
        from servekit import BaseHandler
        """ + textwrap.indent(GATE_HANDLER_CODE, " " * 8) + """

        class Gated(BaseHandler):
            def inference(self, data):
                wait_at_gate(self.context.parameters["gate"], data["x"][:, 0])
                return {"y": data["x"]}
    """)
    return model_dir


def write_whoami_model(root: Path, name: str = "whoami") -> Path:
    """Answers each row with the PID of the process that ran it (to see which worker served a request)."""
    model_dir = root / name
    _write_config(model_dir, {
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [-1, 1]}],
        "outputs": [{"name": "pid", "datatype": "INT64", "shape": [-1, 1]}],
    })
    _write_handler(model_dir, '''
        import os

        import numpy as np

        from servekit import BaseHandler


        class WhoAmI(BaseHandler):
            def inference(self, data):
                return {"pid": np.full((len(data["x"]), 1), os.getpid(), dtype=np.int64)}
    ''')
    return model_dir


def write_broken_model(root: Path, name: str = "broken") -> Path:
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text("max_batch_size: lots\nno_such_field: 1\n", encoding="utf-8")
    _write_handler(model_dir, '''
        from servekit import BaseHandler


        class Never(BaseHandler):
            def inference(self, data):
                return data
    ''')
    return model_dir


def _onnx_bytes(weights: np.ndarray[Any, Any]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["y"], axis=1),
            helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(weights, name="W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    return bytes(model.SerializeToString())


def write_onnx_model(root: Path, name: str = "onnx_linear") -> Path:
    model_dir = root / name
    _write_config(model_dir, {"version_policy": {"all": True}, "max_batch_size": 16})
    for version, weights in ONNX_WEIGHTS.items():
        (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
        (model_dir / str(version) / "model.onnx").write_bytes(_onnx_bytes(weights))
    return model_dir


def onnx_expected(x: np.ndarray[Any, Any], version: int = 2) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """What ``onnx_linear`` returns for ``x``: (probabilities, labels), computed with numpy."""
    logits = x.astype(np.float64) @ ONNX_WEIGHTS[version].astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return probs, probs.argmax(axis=1)


def build_main_repository(root: Path, gate: Path) -> Path:
    """identity, onnx_linear and reloadable (v1, v2), broken, faulty, slow (0.2 s per batch) and gated (at
    ``gate``) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    write_identity_model(root)
    write_onnx_model(root)
    write_onnx_model(root, name="reloadable")  # unloaded and loaded again by a test; nothing else uses it
    write_broken_model(root)
    write_faulty_model(root)
    write_slow_model(root, delay_s=0.2)
    write_gated_model(root, gate)
    return root
