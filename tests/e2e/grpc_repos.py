"""The model repository of the gRPC end-to-end tests (built in code, like repos.py).

Beside repos.py's identity, onnx_linear, reloadable, faulty and slow (recording its
batches), it adds two models the simple API and the message size tests need:

- ``slow_classifier``: FP32 ``[-1, 2]`` -> ``label`` INT64 ``[-1]`` (argmax) and ``probs``
  FP32 ``[-1, 2]`` (softmax); up to 8 rows per batch; each batch waits at its gate
  (tests/gate.py), which records the first value of each row, batch by batch.
- ``gated``: repos.py's gated echo model, at its own gate.
- ``big``: FP32 ``[-1]`` with no batching -> the element count, for messages near 64 MiB.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.gate import GATE_HANDLER_CODE

from .repos import (
    _write_config,
    _write_handler,
    write_faulty_model,
    write_gated_model,
    write_identity_model,
    write_onnx_model,
    write_slow_model,
)

__all__ = ["build_grpc_repository"]


def _write_slow_classifier(root: Path, gate: Path) -> None:
    model_dir = root / "slow_classifier"
    _write_config(model_dir, {
        "max_batch_size": 8,
        "batching": {"max_queue_delay_ms": 50},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probs", "datatype": "FP32", "shape": [-1, 2]}],
        "parameters": {"gate": str(gate)},
    })
    _write_handler(model_dir, """
        import numpy as np

        from servekit import BaseHandler
        """ + textwrap.indent(GATE_HANDLER_CODE, " " * 8) + """

        class SlowClassifier(BaseHandler):
            def inference(self, data):
                x = data["x"]
                wait_at_gate(self.context.parameters["gate"], x[:, 0])
                probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
                return {"label": np.argmax(x, axis=1).astype(np.int64), "probs": probs.astype(np.float32)}
    """)


def _write_big(root: Path) -> None:
    model_dir = root / "big"
    _write_config(model_dir, {
        "max_batch_size": 0,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "count", "datatype": "INT64", "shape": [1]}],
    })
    _write_handler(model_dir, '''
        import numpy as np

        from servekit import BaseHandler


        class Big(BaseHandler):
            def inference(self, data):
                return {"count": np.array([data["x"].size], dtype=np.int64)}
    ''')


def build_grpc_repository(root: Path, gates: dict[str, Path]) -> Path:
    """The models above; ``gates``: the gate folders of ``slow_classifier`` and ``gated``."""
    root.mkdir(parents=True, exist_ok=True)
    write_identity_model(root)
    write_onnx_model(root)
    write_onnx_model(root, name="reloadable")
    write_faulty_model(root)
    write_slow_model(root, delay_s=0.3)
    write_gated_model(root, gates["gated"])
    _write_slow_classifier(root, gates["slow_classifier"])
    _write_big(root)
    return root
