"""Triton's machine gauges: CPU and memory from psutil, GPUs from NVML (a stand-in NVML here: this
machine has no GPU; the units and labels are Triton's, see tests/formats/triton/README.md)."""

from __future__ import annotations

import sys
import types
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servekit.observability.triton_system import SystemGauges


def _page(gauges: SystemGauges) -> dict[str, tuple[str, list[tuple[dict[str, str], float]]]]:
    text = "\n".join(gauges.lines()) + "\n"
    return {family.name: (family.type, [(s.labels, s.value) for s in family.samples])
            for family in text_string_to_metric_families(text)}


def test_cpu_and_memory_gauges_have_tritons_names_units_and_no_labels() -> None:
    page = _page(SystemGauges())
    for name in ("nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes"):
        kind, samples = page[name]
        assert kind == "gauge" and [labels for labels, _ in samples] == [{}], name
    assert page["nv_cpu_memory_total_bytes"][1][0][1] == psutil.virtual_memory().total
    assert 0 < page["nv_cpu_memory_used_bytes"][1][0][1] < psutil.virtual_memory().total
    assert 0.0 <= page["nv_cpu_utilization"][1][0][1] <= 1.0


class _FakeNvml(types.ModuleType):
    """Two GPUs as NVML reports them: percent, bytes, milliwatts, millijoules since boot."""

    class NVMLError(Exception):
        pass

    def __init__(self, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.fail_init = fail_init
        self.energy = {0: 1_000_000, 1: 2_000_000}

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-{handle}".encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return types.SimpleNamespace(gpu=37 + handle)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(total=80 * 2**30, used=(handle + 1) * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 123_456

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        if handle == 1:
            raise self.NVMLError("Not Supported")
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self.energy[handle]


def test_gpu_gauges_in_tritons_units_per_gpu_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gauges = SystemGauges()
    nvml.energy[0] += 5_500  # 5.5 J used by GPU 0 since the server started
    page = _page(gauges)

    def by_gpu(name: str) -> dict[str, float]:
        return {labels["gpu_uuid"]: value for labels, value in page[name][1]}

    assert by_gpu("nv_gpu_utilization") == {"GPU-0": 0.37, "GPU-1": 0.38}
    assert by_gpu("nv_gpu_memory_total_bytes") == {"GPU-0": 80 * 2**30, "GPU-1": 80 * 2**30}
    assert by_gpu("nv_gpu_memory_used_bytes") == {"GPU-0": 2**30, "GPU-1": 2 * 2**30}
    assert by_gpu("nv_gpu_power_usage") == {"GPU-0": 123.456, "GPU-1": 123.456}
    assert by_gpu("nv_gpu_power_limit") == {"GPU-0": 700.0}  # GPU 1 does not report it: left out
    assert page["nv_energy_consumption"][0] == "counter"
    energy = {labels["gpu_uuid"]: value for labels, value in page["nv_energy_consumption"][1]
              if "gpu_uuid" in labels}
    assert energy == {"GPU-0": 5.5, "GPU-1": 0.0}
    assert page["nv_gpu_utilization"][0] == "gauge"


def test_only_the_gpus_cuda_may_use_are_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1")
    page = _page(SystemGauges())
    assert [labels["gpu_uuid"] for labels, _ in page["nv_gpu_utilization"][1]] == ["GPU-1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    page = _page(SystemGauges())
    assert [labels["gpu_uuid"] for labels, _ in page["nv_gpu_utilization"][1]] == ["GPU-0"]


@pytest.mark.parametrize("nvml", [None, _FakeNvml(fail_init=True)], ids=["no pynvml", "no driver"])
def test_without_nvml_or_a_driver_there_are_no_gpu_families(monkeypatch: pytest.MonkeyPatch,
                                                             nvml: _FakeNvml | None) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)  # None: the import fails
    page = _page(SystemGauges())
    assert "nv_cpu_utilization" in page
    assert not [name for name in page if name.startswith(("nv_gpu", "nv_energy"))]
