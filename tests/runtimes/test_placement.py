"""GPU placement: the pure rule (instance index -> device), the config's grammar, and the CUDA path
where a GPU is present (skipped, with the reason, where none is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servekit.config import ModelConfig, parse_model_config
from servekit.errors import ConfigError
from servekit.runtimes import RuntimeContext
from servekit.runtimes.onnx import OnnxRuntime, cuda_providers
from servekit.runtimes.placement import device_index, place_instance
from tests.builders import write_onnx_model


@pytest.mark.parametrize(("wanted", "gpus", "expected"), [
    ("auto", 0, ["cpu", "cpu", "cpu"]),
    ("auto", 2, ["cuda:0", "cuda:0", "cuda:0"]),  # as before placement: the first GPU
    ("auto", None, ["cuda:0", "cuda:0", "cuda:0"]),
    ("cpu", 4, ["cpu", "cpu", "cpu"]),
    ("cuda", 2, ["cuda:0", "cuda:0", "cuda:0"]),
    ("cuda:1", 2, ["cuda:1", "cuda:1", "cuda:1"]),
    (["cuda:0", "cuda:1"], 2, ["cuda:0", "cuda:1", "cuda:0"]),
    (["cuda:1", "cuda", "cpu"], 2, ["cuda:1", "cuda:0", "cpu"]),
    (["cuda:3", "cuda:5"], None, ["cuda:3", "cuda:5", "cuda:3"]),  # onnxruntime cannot count: not checked here
])
def test_instances_take_the_devices_round_robin(wanted: str | list[str], gpus: int | None,
                                                expected: list[str]) -> None:
    assert [place_instance(wanted, instance, gpus) for instance in range(3)] == expected


@pytest.mark.parametrize(("wanted", "gpus", "message"), [
    ("cuda", 0, "device 'cuda' was asked for but no CUDA device is available"),
    ("cuda:2", 2, "device 'cuda:2' was asked for but this machine has 2 CUDA device(s) (cuda:0 .. cuda:1)"),
    (["cuda:0", "cuda:1"], 1, "device 'cuda:1' was asked for but this machine has 1 CUDA device(s)"),
])
def test_a_gpu_that_is_not_there_is_refused_by_name(wanted: str | list[str], gpus: int, message: str) -> None:
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        for instance in range(2):
            place_instance(wanted, instance, gpus)


def test_device_index() -> None:
    assert (device_index("cuda"), device_index("cuda:0"), device_index("cuda:12")) == (0, 0, 12)
    with pytest.raises(ValueError, match="not a CUDA device"):
        device_index("cpu")


def test_the_config_accepts_the_placement_grammar_and_names_what_is_wrong() -> None:
    assert ModelConfig(device="CUDA:1").device == "cuda:1"
    assert ModelConfig(device=[" cuda:0", "cuda:1"]).device == ["cuda:0", "cuda:1"]
    assert parse_model_config("device: [cuda:0, cuda:1]\ninstances: 4\n", "x").device == ["cuda:0", "cuda:1"]
    for bad, message in (("gpu", "device 'gpu': expected auto, cpu, cuda, cuda:N"),
                         ("cuda:01", "device 'cuda:01'"), ("[]", "needs at least one device"),
                         ("[cuda:0, auto]", "device list entry 'auto': expected cpu, cuda or cuda:N")):
        with pytest.raises(ConfigError, match=message):
            parse_model_config(f"device: {bad}\n", "config.yaml")


def test_onnx_sessions_get_their_gpu_as_the_cuda_providers_device_id() -> None:
    assert cuda_providers("cpu") == ["CPUExecutionProvider"]
    assert cuda_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]


def _onnx_instances(tmp_path: Path, device: str | list[str], count: int) -> list[OnnxRuntime]:
    version_dir = write_onnx_model(tmp_path / "m" / "1").parent
    config = ModelConfig(device=device, instances=count)
    runtimes = []
    for instance in range(count):
        runtime = OnnxRuntime(RuntimeContext("m", 1, tmp_path / "m", version_dir, config, instance=instance))
        runtime.load()
        runtimes.append(runtime)
    return runtimes


def _onnx_cuda_or_skip() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("no CUDA here: onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu and a GPU run this)")


def test_onnx_instances_without_a_gpu_run_on_the_cpu(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a GPU is present: test_onnx_instances_spread_over_the_gpus covers it")
    assert [r.device for r in _onnx_instances(tmp_path, "auto", 2)] == ["cpu", "cpu"]
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        _onnx_instances(tmp_path, ["cuda:0", "cuda:1"], 2)


def test_onnx_instances_spread_over_the_gpus(tmp_path: Path) -> None:
    _onnx_cuda_or_skip()
    torch = pytest.importorskip("torch", reason="torch counts the GPUs for this test")
    gpus = torch.cuda.device_count()
    wanted = [f"cuda:{index}" for index in range(gpus)]
    runtimes = _onnx_instances(tmp_path, wanted, gpus + 1)
    assert [r.device for r in runtimes] == [*wanted, "cuda:0"]
    for runtime in runtimes:
        options = runtime._session.get_provider_options()["CUDAExecutionProvider"]
        assert options["device_id"] == runtime.device.split(":")[1]
        out = runtime.predict({"x": np.ones((2, 4), dtype=np.float32)})
        assert all(array.shape[0] == 2 for array in out.values())


def test_torch_instances_spread_over_the_gpus(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA here: torch.cuda.is_available() is False (a machine with a GPU runs this)")
    from servekit.runtimes.torch import TorchScriptRuntime

    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    torch.jit.script(torch.nn.Linear(4, 3)).save(str(version_dir / "model.pt"))
    gpus = torch.cuda.device_count()
    wanted = [f"cuda:{index}" for index in range(gpus)]
    config = parse_model_config("inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]\n"
                                "outputs: [{name: y, datatype: FP32, shape: [-1, 3]}]\n", "x")
    config = config.model_copy(update={"device": wanted, "instances": gpus + 1})
    for instance in range(gpus + 1):
        runtime = TorchScriptRuntime(RuntimeContext("m", 1, tmp_path / "m", version_dir, config, instance=instance))
        runtime.load()
        assert runtime.device == wanted[instance % gpus]
        assert str(next(runtime._module.parameters()).device) == runtime.device
        assert runtime.predict({"x": np.ones((2, 4), dtype=np.float32)})["y"].shape == (2, 3)
        runtime.unload()


def test_triton_model_config_has_one_instance_group_per_device() -> None:
    """Triton's instance_group count is per GPU listed, so each GPU gets its own group."""
    from types import SimpleNamespace

    from servekit.serving.triton import _instance_groups

    spread = SimpleNamespace(name="m", devices=("cuda:0", "cuda:1", "cuda:0", "cpu"),
                             batcher=SimpleNamespace(instance_count=4))
    assert _instance_groups(spread) == [  # type: ignore[arg-type]
        {"name": "m_0", "count": 2, "kind": "KIND_GPU", "gpus": [0]},
        {"name": "m_1", "count": 1, "kind": "KIND_GPU", "gpus": [1]},
        {"name": "m_2", "count": 1, "kind": "KIND_CPU"},
    ]
    cpu = SimpleNamespace(name="m", devices=("cpu", "cpu"), batcher=SimpleNamespace(instance_count=2))
    assert _instance_groups(cpu) == [{"name": "m_0", "count": 2, "kind": "KIND_CPU"}]  # type: ignore[arg-type]
