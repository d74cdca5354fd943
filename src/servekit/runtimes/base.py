"""The Runtime interface: load a model version, run it on whole batches.

A runtime sees only numpy arrays keyed by tensor name. It knows nothing of
queues or transports. ``predict`` may be called from several threads at once only when
``thread_safe`` is true; otherwise each instance gets its own runtime object.

Most runtimes take a batch as one set of merged arrays (``predict``). A runtime whose
model code expects the batch as its separate client requests (Triton's python backend,
TorchServe handlers) sets ``per_request`` and implements ``predict_requests``: it then gets
one ``RuntimeRequest`` per client request, with that request's parameters, and answers
each one on its own, so a failure of one request leaves the others of its batch answered.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servekit.config import ModelConfig
from servekit.types import Arrays, TensorSpec

__all__ = ["Arrays", "Runtime", "RuntimeContext", "RuntimeRequest", "Signature", "find_file", "imported_torch_gpus"]


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """What a runtime is given: where its files are and how it is configured."""

    model_name: str
    version: int
    model_dir: Path
    version_dir: Path
    config: ModelConfig
    instance: int = 0  # which of the version's instances this runtime is (0 .. instances - 1)


@dataclass(frozen=True, slots=True)
class RuntimeRequest:
    """One client request as a per-request runtime sees it (see the module docstring)."""

    inputs: Arrays
    parameters: Mapping[str, Any] = field(default_factory=dict)
    requested_outputs: tuple[str, ...] = ()  # empty: every output
    id: str | None = None


class Runtime(ABC):
    """One loaded model version. Subclasses stay small: load, signature, predict."""

    platform: str = "unknown"
    # See the module docstring: True only when predict() may run on several threads at once.
    thread_safe: bool = False
    # True: batches arrive through predict_requests, one RuntimeRequest per client request.
    per_request: bool = False
    # Per-request runtimes only: True when each row of a request is answered on its own, so the batcher
    # may cut a request with more rows than a batch holds into parts (batching.oversize: split), as it
    # does for merging runtimes; False: such a request is refused, the model seeing each request whole.
    splits_by_rows: bool = False
    # Set by load() when the model files name their version (a TorchServe archive's "1.0"):
    # clients may then ask for the version by that label as well as by its number.
    version_label: str | None = None

    def __init__(self, context: RuntimeContext) -> None:
        self.context = context
        # Where this instance runs: "cpu" or "cuda:N" (servekit.runtimes.placement), set by load().
        self.device = "cpu"

    @abstractmethod
    def load(self) -> None:
        """Load weights; raise with a clear message when files or extras are missing."""

    def signature(self) -> Signature | None:
        """Inputs and outputs the runtime can tell by itself, or None when the config must say."""
        return None

    @abstractmethod
    def predict(self, inputs: Arrays) -> Arrays:
        """Run one batch. Must return one array per output, each with as many rows as the inputs."""

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        """Per-request runtimes only: run one batch given as its client requests, in order.
        Returns one entry per request: its outputs, or the exception that fails that request
        alone (a ServekitError keeps its status; anything else is the model's failure)."""
        raise NotImplementedError(f"{type(self).__name__} runs merged batches (predict), not per request")

    def unload(self) -> None:  # noqa: B027 - optional hook, most runtimes need nothing here
        """Release what load() took; the default drops nothing explicitly."""

    def abort(self) -> None:  # noqa: B027 - optional hook, most runtimes need nothing here
        """Called (on the event loop: must not block) when the batcher abandons this instance because
        a call ran past ``execution_timeout_s``: stop that call if the runtime can. ``unload`` follows
        once the call has returned. The default does nothing: a thread cannot be stopped."""

    def unavailable_reason(self) -> str | None:
        """Why this instance cannot serve now although it loaded (a model process that crashed too
        often), or None when it can."""
        return None

    def run_inline(self) -> None:  # noqa: B027 - optional hook, most runtimes need nothing here
        """Called once, after load(), when every batch will run on the event loop thread (the
        model is fast: see servekit.batching.execution). A runtime may retune itself for that
        (onnx drops its intra-op worker threads); the default changes nothing."""


def imported_torch_gpus() -> int:
    """CUDA devices torch sees, asked only when torch is imported already (by a handler or model module):
    a numpy handler never pays for importing torch. 0 without torch or without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return 0
    count: int = torch.cuda.device_count()
    return count


def find_file(directory: Path, suffixes: tuple[str, ...], name: str | None = None) -> Path:
    """The one file in ``directory`` whose name ends with one of ``suffixes``; or, when the
    config names one (``model_file``), that file."""
    if name is not None:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: no model file {name} (model_file in the model's config)")
        return directory / name
    found = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if not found:
        raise FileNotFoundError(f"{directory}: no file ending in {', '.join(suffixes)}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise FileNotFoundError(f"{directory}: more than one model file ({names})")
    return found[0]
