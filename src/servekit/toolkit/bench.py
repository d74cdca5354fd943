"""``servekit bench``: a bounded load test of a running server, one table, JSON and a plot.

A bench is one or two *series* (the same load against one endpoint each, see ``--compare``),
each run at every load level: a concurrency (closed loop) or a rate (open loop). Every run
is bounded by its duration plus a grace period, and the whole bench by a hard time limit,
after which what was measured so far is reported and marked incomplete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from servekit.toolkit.clients import Endpoint, Protocol, fetch_inputs, open_client
from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.loadgen import Measurement, closed_loop, open_loop, percentile_summary
from servekit.toolkit.specs import Arrays, random_inputs
from servekit.types import TensorSpec

__all__ = ["BenchOptions", "BenchResult", "RunRecord", "Series", "plan_series", "run_bench"]

_PROTOCOLS: tuple[Protocol, ...] = ("http", "simple", "grpc")
_DEFAULT_PORTS = {"http": 8000, "simple": 8000, "grpc": 8001}


@dataclass(frozen=True, slots=True)
class BenchOptions:
    url: str
    model: str
    version: str | None = None
    protocol: Protocol = "http"
    concurrency: tuple[int, ...] = (1, 8, 32)
    rates: tuple[float, ...] = ()  # given: open loop at each rate, --concurrency caps the connections
    duration_s: float = 10.0
    requests: int | None = None  # per run; the duration still bounds it
    warmup_s: float = 1.0
    batch: int = 1
    binary: bool = False
    compare: str | None = None
    grpc_channels: int = 1
    request_timeout_s: float = 10.0
    time_limit_s: float | None = None  # default: twice the planned time plus 30 s

    def planned_s(self, series: int) -> float:
        levels = len(self.rates) or len(self.concurrency)
        return series * (levels * self.duration_s + self.warmup_s)

    def limit_s(self, series: int) -> float:
        return self.time_limit_s if self.time_limit_s is not None else 2 * self.planned_s(series) + 30


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    endpoint: Endpoint


@dataclass(slots=True)
class RunRecord:
    """One run, as the JSON results and the table show it. Latencies in milliseconds."""

    series: str
    protocol: str
    address: str
    model: str
    mode: str  # "closed" (concurrency) or "open" (rate)
    concurrency: int | None
    target_rate: float | None
    duration_s: float
    requests_ok: int
    errors: int
    error_kinds: dict[str, int]
    throughput_rps: float
    rows_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    client_cpu: float

    @property
    def load(self) -> str:
        if self.mode == "closed":
            return f"{self.concurrency} client{'' if self.concurrency == 1 else 's'}"
        return f"{self.target_rate:g} req/s"


@dataclass(slots=True)
class BenchResult:
    options: BenchOptions
    series: list[Series]
    inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per series: what one request sends
    runs: list[RunRecord] = field(default_factory=list)
    complete: bool = False
    started_at: float = field(default_factory=time.time)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        from servekit.toolkit.environment import describe_environment

        return {
            "tool": "servekit bench",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_at)),
            "complete": self.complete, "environment": describe_environment(),
            "options": asdict(self.options),
            "series": [{"label": s.label, **asdict(s.endpoint), "inputs": self.inputs.get(s.label, [])}
                       for s in self.series],
            "runs": [asdict(run) for run in self.runs],
        }


def plan_series(options: BenchOptions) -> list[Series]:
    """The series ``--compare`` asks for: ``PROTOCOL[@ADDRESS]``, ``model=NAME`` or a second server's URL."""
    if options.protocol not in _PROTOCOLS:
        raise ToolkitError(f"--protocol {options.protocol}: expected one of {', '.join(_PROTOCOLS)}")
    if options.binary and options.protocol != "http":
        raise ToolkitError("--binary applies to --protocol http only")
    main = Endpoint(options.protocol, _address(options.protocol, options.url), options.model, options.version)
    compare = (options.compare or "").strip()
    if not compare:
        return [Series(options.protocol, main)]
    protocol, _, address = compare.partition("@")
    if protocol in _PROTOCOLS:
        if protocol == options.protocol and not address:
            raise ToolkitError(f"--compare {compare}: that is the protocol being measured already")
        other = address or _default_address(options.url, protocol)
        second = Endpoint(protocol, _address(protocol, other), options.model, options.version)
        if protocol == options.protocol:  # the same protocol on another server: tell them by address
            return _by_address(main, second, compare)
        return [Series(options.protocol, main), Series(protocol, second)]
    if compare.startswith("model="):
        name, _, version = compare.removeprefix("model=").partition(":")
        if not name or (name == options.model and (version or None) == options.version):
            raise ToolkitError("--compare model=NAME[:VERSION]: give another model (or version)")
        label = f"{name}:{version}" if version else name
        return [Series(options.model if options.version is None else f"{options.model}:{options.version}", main),
                Series(label, Endpoint(options.protocol, main.address, name, version or None))]
    return _by_address(main, Endpoint(options.protocol, _address(options.protocol, compare), options.model,
                                      options.version), compare)


def _by_address(main: Endpoint, second: Endpoint, compare: str) -> list[Series]:
    if second.address == main.address:
        raise ToolkitError(f"--compare {compare}: that is the server being measured already")
    return [Series(main.address, main), Series(second.address, second)]


async def run_bench(options: BenchOptions, on_progress: Callable[[str, float], None] | None = None) -> BenchResult:
    """Run every series at every level within the time limit; never raises for a failed request."""
    series = plan_series(options)
    result = BenchResult(options, series)
    payloads = {}
    for one in series:  # fail fast, before any load, on an unknown model, a bad request or a dead server
        payloads[one.label] = _payload(await fetch_inputs(one.endpoint, options.request_timeout_s), options.batch)
        result.inputs[one.label] = [{"name": name, "datatype": _datatype(a), "shape": list(a.shape)}
                                    for name, a in payloads[one.label].items()]
        client = await open_client(one.endpoint, payloads[one.label], 1, options.request_timeout_s, options.binary)
        try:
            problem = await client.check()
        finally:
            await client.aclose()
        if problem is not None:
            raise ToolkitError(f"a first request failed, so no load was sent: {problem}")
    progress = _Progress(options, len(series), on_progress)
    ticker = asyncio.create_task(progress.tick())
    try:
        await asyncio.wait_for(_run_all(options, series, payloads, result, progress), options.limit_s(len(series)))
        result.complete = True
    except TimeoutError:
        result.complete = False
    finally:
        ticker.cancel()
    return result


async def _run_all(options: BenchOptions, series: list[Series], payloads: dict[str, Arrays], result: BenchResult,
                   progress: _Progress) -> None:
    levels: list[tuple[int | None, float | None]] = (
        [(None, rate) for rate in options.rates] if options.rates else [(c, None) for c in options.concurrency]
    )
    connections_cap = max(options.concurrency)
    for one in series:
        if options.warmup_s > 0:
            progress.begin(f"{one.label}: warm-up", options.warmup_s)
            await _measure(options, one, payloads[one.label], connections_cap, None, options.warmup_s)
        for concurrency, rate in levels:
            progress.begin(f"{one.label}: " + (f"{concurrency} client(s)" if rate is None else f"{rate:g} req/s"),
                           options.duration_s)
            measurement = await _measure(options, one, payloads[one.label], concurrency or connections_cap, rate,
                                         options.duration_s)
            result.runs.append(_record(options, one, concurrency, rate, measurement))


async def _measure(options: BenchOptions, one: Series, payload: Arrays, connections: int, rate: float | None,
                   duration_s: float) -> Measurement:
    channels = options.grpc_channels if one.endpoint.protocol == "grpc" else connections
    client = await open_client(one.endpoint, payload, channels, options.request_timeout_s, options.binary)
    try:
        if rate is None:
            return await closed_loop(client.send, connections, duration_s, options.requests,
                                     grace_s=options.request_timeout_s)
        return await open_loop(client.send, rate, duration_s, options.requests, grace_s=options.request_timeout_s)
    finally:
        await client.aclose()


def _record(options: BenchOptions, one: Series, concurrency: int | None, rate: float | None,
            measurement: Measurement) -> RunRecord:
    elapsed = max(measurement.elapsed_s, 1e-9)
    return RunRecord(
        series=one.label, protocol=one.endpoint.protocol, address=one.endpoint.address, model=one.endpoint.model,
        mode="closed" if rate is None else "open", concurrency=concurrency, target_rate=rate,
        duration_s=round(measurement.elapsed_s, 3), requests_ok=measurement.ok, errors=sum(measurement.errors.values()),
        error_kinds=dict(measurement.errors), throughput_rps=measurement.ok / elapsed,
        rows_per_s=measurement.ok * options.batch / elapsed, client_cpu=round(measurement.client_cpu, 3),
        **percentile_summary(measurement.latencies),
    )


def _payload(specs: list[TensorSpec], batch: int) -> Arrays:
    """Random data for one request: ``batch`` rows where the batch is variable, 1 for other variable dims."""
    rng = np.random.default_rng(0)
    arrays: Arrays = {}
    for spec in specs:
        if not spec.shape:
            raise ToolkitError(f"input {spec.name!r} is a scalar; bench sends tensors with a batch dimension")
        dims = [batch if index == 0 and dim == -1 else max(dim, 1) for index, dim in enumerate(spec.shape)]
        arrays |= random_inputs([TensorSpec(spec.name, spec.datatype, (-1, *dims[1:]))], dims[0], rng)
    return arrays


def _datatype(array: np.ndarray[Any, Any]) -> str:
    from servekit.types import datatype_of

    return datatype_of(array)


def _address(protocol: Protocol, url: str) -> str:
    parts = urlsplit(url if "://" in url else f"//{url}")
    if not parts.hostname or not parts.port:
        raise ToolkitError(f"{url!r}: expected HOST:PORT or http://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}" if protocol == "grpc" else f"http://{host}:{parts.port}"


def _default_address(url: str, protocol: Protocol) -> str:
    parts = urlsplit(url if "://" in url else f"//{url}")
    return f"{parts.hostname}:{_DEFAULT_PORTS[protocol]}"


class _Progress:
    """Reports (description, fraction of the planned time done) about five times a second."""

    def __init__(self, options: BenchOptions, series: int, sink: Callable[[str, float], None] | None) -> None:
        self.total = max(options.planned_s(series), 1e-9)
        self.sink = sink
        self.done = 0.0
        self.current = ("starting", 0.0, time.perf_counter())

    def begin(self, description: str, planned_s: float) -> None:
        _, previous, _ = self.current
        self.done += previous
        self.current = (description, planned_s, time.perf_counter())
        self.report()

    def report(self) -> None:
        description, planned, started = self.current
        if self.sink is not None:
            within = min(time.perf_counter() - started, planned)
            self.sink(description, min((self.done + within) / self.total, 1.0))

    async def tick(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(0.2)
