"""Triton's machine-wide gauges (``--triton-metrics``): CPU and memory always, GPUs where NVML finds some.

tritonserver polls these every ``--metrics-interval-ms`` (2 s) and writes, without labels::

    nv_cpu_utilization          gauge  busy share of all CPUs since the last poll, 0.0 - 1.0
    nv_cpu_memory_total_bytes   gauge  RAM, bytes (MemTotal)
    nv_cpu_memory_used_bytes    gauge  RAM in use, bytes (MemTotal - MemAvailable)

and, per GPU its CUDA runtime sees (label ``gpu_uuid``), read through DCGM::

    nv_gpu_utilization          gauge    0.0 - 1.0
    nv_gpu_memory_total_bytes   gauge    bytes
    nv_gpu_memory_used_bytes    gauge    bytes
    nv_gpu_power_usage          gauge    watts
    nv_gpu_power_limit          gauge    watts
    nv_energy_consumption       counter  joules since the server started

servekit reads them when the page is scraped, in the metrics server's process: CPU and memory
through psutil (its CPU share counts iowait as idle, as Triton does, and covers the time since the
previous scrape), GPUs through NVML (the ``nvidia-ml-py`` package, ``pynvml``) when it is installed
and a driver answers; otherwise the ``nv_gpu_*`` families are absent, as on a CPU-only Triton. With
``CUDA_VISIBLE_DEVICES`` set, only the GPUs it names (by index or UUID) are written.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Final

import psutil

from servekit.observability.triton_metrics import number_text

__all__ = ["SystemGauges"]

log = logging.getLogger("servekit.metrics")

_CPU: Final = {
    "nv_cpu_utilization": "Share of CPU time busy since the previous scrape, 0.0 - 1.0 (iowait counts as idle)",
    "nv_cpu_memory_total_bytes": "Total RAM, in bytes",
    "nv_cpu_memory_used_bytes": "RAM in use (total less available), in bytes",
}
_GPU: Final = {  # name -> (type, help)
    "nv_gpu_utilization": ("gauge", "GPU utilization, 0.0 - 1.0"),
    "nv_gpu_memory_total_bytes": ("gauge", "GPU total memory, in bytes"),
    "nv_gpu_memory_used_bytes": ("gauge", "GPU used memory, in bytes"),
    "nv_gpu_power_usage": ("gauge", "GPU power draw, in watts"),
    "nv_gpu_power_limit": ("gauge", "GPU power management limit, in watts"),
    "nv_energy_consumption": ("counter", "GPU energy used since the server started, in joules"),
}
_GAUGES: Final = tuple(name for name, (kind, _) in _GPU.items() if kind == "gauge")


def _gpu_value(nvml: Any, handle: Any, name: str) -> float:
    """One gauge of one GPU in Triton's unit (NVML: percent, bytes, milliwatts)."""
    if name == "nv_gpu_utilization":
        return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100
    if name == "nv_gpu_memory_total_bytes":
        return float(nvml.nvmlDeviceGetMemoryInfo(handle).total)
    if name == "nv_gpu_memory_used_bytes":
        return float(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    if name == "nv_gpu_power_usage":
        return float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000
    return float(nvml.nvmlDeviceGetEnforcedPowerLimit(handle)) / 1000


class _Gpus:
    """The NVML handles of the visible GPUs, and each one's energy counter at start (millijoules)."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        wanted = None if visible is None else {part.strip() for part in visible.split(",") if part.strip()}
        self.devices: list[tuple[str, Any]] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            if wanted is None or str(index) in wanted or uuid in wanted:
                self.devices.append((uuid, handle))
        self._energy_at_start = {uuid: self._energy(handle) for uuid, handle in self.devices}

    def _energy(self, handle: Any) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self._nvml.NVMLError:
            return None

    def lines(self) -> list[str]:
        nvml = self._nvml
        values: dict[str, list[tuple[str, float]]] = {name: [] for name in _GPU}
        for uuid, handle in self.devices:
            for name in _GAUGES:
                try:
                    values[name].append((uuid, _gpu_value(nvml, handle, name)))
                except nvml.NVMLError:  # a field this GPU does not report: left out, as DCGM's blanks
                    continue
            start, now = self._energy_at_start.get(uuid), self._energy(handle)
            if start is not None and now is not None:
                values["nv_energy_consumption"].append((uuid, max(0, now - start) / 1000))
        lines: list[str] = []
        for name, (kind, help_text) in _GPU.items():
            if values[name]:
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                lines += [f'{name}{{gpu_uuid="{uuid}"}} {number_text(value)}' for uuid, value in values[name]]
        return lines


def _open_gpus() -> _Gpus | None:
    """The visible GPUs through NVML, or None: no ``pynvml``, no driver, or no GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("no GPU metrics: NVML did not start (%s)", exc)
        return None
    gpus = _Gpus(pynvml)
    return gpus if gpus.devices else None


class SystemGauges:
    """Writes the CPU, memory and GPU families at each scrape (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cpu_times = psutil.cpu_times()
        self._gpus = _open_gpus()

    def _cpu_utilization(self) -> float:
        with self._lock:
            before, self._cpu_times = self._cpu_times, psutil.cpu_times()
            after = self._cpu_times
        idle_fields = ("idle", "iowait")
        # guest time is already in user (and guest_nice in nice) on Linux: not counted twice
        fields = [f for f in after._fields if f not in ("guest", "guest_nice")]
        busy = sum(max(0.0, getattr(after, f) - getattr(before, f)) for f in fields if f not in idle_fields)
        idle = sum(max(0.0, getattr(after, f) - getattr(before, f)) for f in fields if f in idle_fields)
        return busy / (busy + idle) if busy + idle > 0 else 0.0

    def lines(self) -> list[str]:
        memory = psutil.virtual_memory()
        values = {
            "nv_cpu_utilization": self._cpu_utilization(),
            "nv_cpu_memory_total_bytes": float(memory.total),
            "nv_cpu_memory_used_bytes": float(memory.total - memory.available),
        }
        lines: list[str] = []
        for name, help_text in _CPU.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {number_text(values[name])}"]
        if self._gpus is not None:
            lines += self._gpus.lines()
        return lines
