"""Whole modules saved with torch.save: refused unless trusted, served when trusted, the class found in
the model's own folder (each model its own), and clear errors when it cannot be found."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from servekit.config import ModelConfig, TensorConfig
from servekit.errors import ConfigError
from servekit.runtimes import RuntimeContext, create_runtime, detect_runtime
from tests.conftest import TORCH_INSTALL, require_module
from tests.toolkit.models import PICKLED_NET, serve_once, write_pickled_torch_model

if TYPE_CHECKING:
    import torch
else:
    torch = require_module("torch", TORCH_INSTALL)

ROWS = np.arange(8, dtype=np.float32).reshape(2, 4) / 10


def _expected(net: Any) -> np.ndarray[Any, Any]:
    with torch.inference_mode():
        return net(torch.from_numpy(ROWS)).numpy()  # type: ignore[no-any-return]


def _load(model_dir: Path, trust: bool, runtime: str = "torch_pickle") -> None:
    config = ModelConfig(trust_pickle=trust, inputs=[TensorConfig(name="x", datatype="FP32", shape=[-1, 4])],
                         outputs=[TensorConfig(name="y", datatype="FP32", shape=[-1, 3])])
    create_runtime(runtime, RuntimeContext("m", 1, model_dir, model_dir / "1", config)).load()


def test_a_pickled_module_is_refused_unless_trusted_and_the_refusal_says_how(tmp_path: Path) -> None:
    write_pickled_torch_model(tmp_path / "m", trust=False)
    with pytest.raises(ConfigError, match=r"model.pth: refusing to unpickle a whole PyTorch module.*set "
                                          r"'trust_pickle: true' in config.yaml.*torch.export program \(.pt2\)"):
        _load(tmp_path / "m", trust=False)


def test_a_trusted_pickle_serves_with_its_class_from_the_model_folder(tmp_path: Path) -> None:
    net = write_pickled_torch_model(tmp_path / "repo" / "m")
    assert detect_runtime(tmp_path / "repo" / "m" / "1", has_handler=False) == "torch_pickle"
    served = serve_once(tmp_path / "repo", "m", {"x": ROWS})
    np.testing.assert_allclose(served["y"], _expected(net), rtol=1e-6)


def test_each_model_gets_its_own_class_module(tmp_path: Path) -> None:
    """Two models, each with a net.py of its own: neither borrows the other's class."""
    nets = {name: write_pickled_torch_model(tmp_path / "repo" / name, scale=scale)
            for name, scale in (("a", 1.0), ("b", -2.0))}
    for name, net in nets.items():
        np.testing.assert_allclose(serve_once(tmp_path / "repo", name, {"x": ROWS})["y"], _expected(net), rtol=1e-6)


def test_a_pt_file_that_is_a_pickle_loads_as_one(tmp_path: Path) -> None:
    net = write_pickled_torch_model(tmp_path / "repo" / "m", file_name="model.pt")
    assert detect_runtime(tmp_path / "repo" / "m" / "1", has_handler=False) == "torchscript"
    np.testing.assert_allclose(serve_once(tmp_path / "repo", "m", {"x": ROWS})["y"], _expected(net), rtol=1e-6)
    with pytest.raises(ConfigError, match=r"model.pt: refusing to unpickle"):
        _load(tmp_path / "repo" / "m", trust=False, runtime="torchscript")


def test_a_class_that_cannot_be_found_is_named_with_the_fix(tmp_path: Path) -> None:
    write_pickled_torch_model(tmp_path / "m", module_name="vanishing_net")
    (tmp_path / "m" / "vanishing_net.py").unlink()
    with pytest.raises(ConfigError, match=r"needs class Net from module vanishing_net, which is neither installed nor "
                                          r"a file in .*put vanishing_net.py, the file that defines Net, in the model"):
        _load(tmp_path / "m", trust=True)


def test_a_class_pickled_from_main_says_to_move_it_into_a_file(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(PICKLED_NET.format(scale=1.0), namespace)  # a class defined in the script that saves it, as a notebook would
    main = sys.modules["__main__"]
    main.Net = namespace["Net"]  # type: ignore[attr-defined]
    try:
        (tmp_path / "m" / "1").mkdir(parents=True)
        torch.save(namespace["Net"](), tmp_path / "m" / "1" / "model.pth")
    finally:
        del main.Net  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"names class Net from __main__ .*move Net into a file of the model folder"):
        _load(tmp_path / "m", trust=True)
