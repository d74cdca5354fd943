"""Which device each instance of a model runs on: the config's ``device`` and the instance's index
in, one device out. Pure: no torch, no onnxruntime; the runtimes tell how many CUDA devices there are.

``device`` in a model's config.yaml is one of

    auto        a GPU when there is one (cuda:0, as before placement existed), else the CPU
    cpu         the CPU
    cuda        cuda:0
    cuda:N      GPU N, for every instance
    [a, b, ...] the instances spread round-robin over the list: instance i on entry i mod len
                (each entry cpu, cuda or cuda:N), e.g. [cuda:0, cuda:1] with instances: 4 puts
                instances 0 and 2 on GPU 0, 1 and 3 on GPU 1

Guarantees of ``place_instance``: it returns ``"cpu"`` or ``"cuda:N"`` (always with the index, so
what describe and stats report is the device itself), never a GPU the runtime says is not there
(RuntimeError naming the device and how many there are), and the same answer for the same
arguments. The grammar is checked when the config is read (``servekit.config.check_device``).
"""

from __future__ import annotations

from collections.abc import Sequence

from servekit.config import ONE_DEVICE, DeviceSetting

__all__ = ["device_index", "place_instance"]


def place_instance(wanted: DeviceSetting | Sequence[str], instance: int, cuda_devices: int | None) -> str:
    """The device of instance ``instance`` (0-based). ``cuda_devices``: how many CUDA devices the runtime
    can use; None when it has CUDA but cannot count the devices (an index is then not checked here, and
    the framework refuses one that is not there)."""
    chosen = wanted if isinstance(wanted, str) else wanted[instance % len(wanted)]
    if chosen == "auto":
        return "cpu" if cuda_devices == 0 else "cuda:0"
    if chosen == "cpu":
        return "cpu"
    index = device_index(chosen)
    if cuda_devices == 0:
        raise RuntimeError(f"device {chosen!r} was asked for but no CUDA device is available")
    if cuda_devices is not None and index >= cuda_devices:
        raise RuntimeError(f"device {chosen!r} was asked for but this machine has {cuda_devices} CUDA device(s)"
                           f" (cuda:0 .. cuda:{cuda_devices - 1})")
    return f"cuda:{index}"


def device_index(device: str) -> int:
    """``cuda:N`` -> N, ``cuda`` -> 0 (ValueError for ``cpu`` or anything else)."""
    found = ONE_DEVICE.fullmatch(device)
    if found is None or device == "cpu":
        raise ValueError(f"{device!r} is not a CUDA device")
    return int(found.group(1) or 0)
