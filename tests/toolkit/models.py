"""Small models for the toolkit tests, written in code into a temporary folder."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DRIFTING_NET", "PICKLED_NET", "TINY_NET", "serve_once", "write_pickled_torch_model",
           "write_sklearn_classifier", "write_torch_models"]

# An nn.Module in its own file, as `servekit convert --module` reads it: 8 features -> dict of two outputs.
TINY_NET = '''
import torch


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(8, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, features):
        scores = torch.softmax(self.out(torch.relu(self.hidden(features))), dim=1)
        return {"scores": scores, "label": scores.argmax(dim=1)}
'''

# Answers differently once exported than when run eagerly: a parity check must catch it.
DRIFTING_NET = '''
import torch


class Drifts(torch.nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            return x + 0.5
        return x * 1.0
'''


def write_torch_models(folder: Path) -> dict[str, Path]:
    """net.py (TinyNet), weights.pt (its state dict), model.pt (TorchScript), model.pt2 (dynamic batch),
    static.pt2 (batch fixed at 1), scaled.pt (TorchScript returning one tensor), drifting.py."""
    import sys

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(textwrap.dedent(TINY_NET), encoding="utf-8")
    (folder / "drifting.py").write_text(textwrap.dedent(DRIFTING_NET), encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        import net
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("net", None)
    module = net.TinyNet().eval()
    torch.save(module.state_dict(), folder / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(folder / "model.pt"))
        torch.jit.save(torch.jit.script(torch.nn.Sequential(module.hidden, torch.nn.ReLU())), str(folder / "scaled.pt"))
    example = (torch.randn(2, 8),)
    program = torch.export.export(module, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(folder / "model.pt2"))
    torch.export.save(torch.export.export(module, (torch.randn(1, 8),)), str(folder / "static.pt2"))
    names = ("net.py", "weights.pt", "model.pt", "model.pt2", "static.pt2", "scaled.pt", "drifting.py")
    return {name: folder / name for name in names}


def write_sklearn_classifier(path: Path) -> Any:
    """A logistic regression on 5 random features, three classes, saved with skops."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.standard_normal((90, 5)).astype(np.float32)
    classes = np.argmax(features[:, :3], axis=1)
    estimator = LogisticRegression(max_iter=500).fit(features, classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    skops.io.dump(estimator, path)
    return estimator


def serve_once(repository: Path, model: str, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    """Load ``repository`` with servekit's Registry (as `servekit serve` does) and infer once."""
    import asyncio

    from servekit.serving.registry import Registry

    registry = Registry(repository)

    async def run() -> dict[str, Any]:
        await registry.load(model)
        try:
            return await registry.resolve(model).batcher.submit(inputs)  # type: ignore[no-any-return]
        finally:
            await registry.close()

    return asyncio.run(run())


# A module file whose Net is pickled whole with torch.save (servekit.runtimes.torch_pickle): 4 -> 3.
PICKLED_NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x) * {scale}
"""
PICKLED_CONFIG = """
trust_pickle: {trust}
inputs: [{{name: x, datatype: FP32, shape: [-1, 4]}}]
outputs: [{{name: y, datatype: FP32, shape: [-1, 3]}}]
"""


def write_pickled_torch_model(model_dir: Path, scale: float = 1.0, module_name: str = "net",
                              file_name: str = "model.pth", trust: bool = True) -> Any:
    """``model_dir`` with ``{module_name}.py`` defining Net, 1/``file_name`` = torch.save(Net()), and a
    config.yaml; returns the module. Its class is forgotten again (as in a fresh process), so loading
    the file must find ``{module_name}.py`` in the model folder."""
    import importlib.util
    import sys

    import torch

    (model_dir / "1").mkdir(parents=True)
    source = model_dir / f"{module_name}.py"
    source.write_text(PICKLED_NET.format(scale=scale))
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        net = module.Net().eval()
        torch.save(net, model_dir / "1" / file_name)
    finally:
        del sys.modules[module_name]
    (model_dir / "config.yaml").write_text(PICKLED_CONFIG.format(trust=str(trust).lower()))
    return net
