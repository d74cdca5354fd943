"""``servekit advise``: from measurements and stated requirements to settings, with reasons.

Pure: curves (see :mod:`servekit.toolkit.measure`) and requirements in, a
:class:`Recommendation` out. Each choice carries the numbers that made it; guidance that
was not measured here (the protocol, instances) says so and names the command that
measures it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from servekit.toolkit.matrix import Requirements, rank_patterns
from servekit.toolkit.measure import Curve
from servekit.toolkit.model_config import render_config, tensor_entries

__all__ = ["DEFAULT_REQUIREMENTS", "Recommendation", "describe_requirements", "recommend"]

DEFAULT_REQUIREMENTS: Requirements = {"latency": 1.0, "throughput": 1.0}
# The matrix's own bar for "low latency"; a batch that takes longer is too big for a latency goal.
_LATENCY_BUDGET_MS = 10.0
# The smallest batch reaching this share of the peak rows/s is the batch size worth waiting for.
_KNEE = 0.9
# Below this much compute per row, per-request overhead outside the model dominates a request.
_SMALL_MODEL_MS = 0.2
_PROTOCOLS = {
    "FastAPI-style": ("simple", "the simple JSON API (POST /predict, or modelserving.ModelService over gRPC)"),
    "TorchServe-style": ("http", "the Open Inference Protocol over HTTP (JSON, or the binary extension for large"
                                 " tensors)"),
    "gRPC transport": ("grpc", "gRPC: inference.GRPCInferenceService (raw tensors) on --grpc-port"),
}


@dataclass(slots=True)
class Recommendation:
    requirements: Requirements  # name -> weight
    curve: Curve | None
    max_batch_size: int = 0
    max_queue_delay_ms: float = 0.0
    instances: int = 1
    protocol: str = "http"
    protocol_text: str = ""
    handler: bool = False
    reasons: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def config_text(self, source: str) -> str:
        """A config.yaml for the recommendation (validated by parse_model_config)."""
        assert self.curve is not None
        candidate = self.curve.candidate
        fields: dict[str, Any] = {"runtime": candidate.runtime}
        if candidate.runtime == "torchscript" and candidate.outputs:  # TorchScript cannot describe its tensors
            fields["inputs"] = tensor_entries(candidate.inputs)
            fields["outputs"] = tensor_entries(candidate.outputs)
        fields["max_batch_size"] = self.max_batch_size
        fields["batching"] = {"enabled": self.max_batch_size > 1, "max_queue_delay_ms": self.max_queue_delay_ms}
        if self.instances > 1:
            fields["instances"] = self.instances
        if candidate.runtime == "onnx":
            fields["onnx"] = {"intra_op_threads": candidate.threads}
        names = {spec.name for spec in candidate.outputs or []}
        if "label" in names:
            fields["simple"] = {"prediction_output": "label"} | (
                {"probability_output": "probabilities"} if "probabilities" in names else {})
        wanted = describe_requirements(self.requirements)
        comments = [f"Written by `servekit advise` for {source}; requirements: {wanted}.",
                    *(f"  {r.strip()}" if r.startswith("  ") else f"- {r}" for r in self.reasons)]
        return render_config(fields, comments)


def describe_requirements(requirements: Mapping[str, float]) -> str:
    """``latency=2, throughput``: each name, with its weight where that is not 1."""
    return ", ".join(name if weight == 1 else f"{name}={weight:g}" for name, weight in requirements.items())


def recommend(curves: list[Curve], requirements: Mapping[str, float] | Iterable[str], cores: int,
              source_runtime: str | None) -> Recommendation:
    """Choose runtime, threads, batching and protocol for ``requirements`` (name -> weight, or names at
    weight 1) from ``curves``. Weights count in the decision matrix's sums (the protocol) and in the
    runtime choice when both latency and throughput are asked for."""
    given = dict(requirements) if isinstance(requirements, Mapping) else dict.fromkeys(requirements, 1.0)
    wanted = given or dict(DEFAULT_REQUIREMENTS)
    advice = Recommendation(wanted, None)
    _choose_protocol(advice, wanted)
    servable = [c for c in curves if c.candidate.runtime is not None and c.at(1) is not None]
    if not servable:
        advice.reasons.append("no runtime could be measured on this model")
        return advice
    if {"edge", "cross-framework"} & set(wanted) and any(c.candidate.runtime == "onnx" for c in servable):
        servable = [c for c in servable if c.candidate.runtime == "onnx"]
        advice.reasons.append("edge / cross-framework: ONNX is the portable format (ONNX Runtime runs on small devices"
                              " and from many languages), so only ONNX Runtime settings were considered")
    advice.curve = chosen = _choose_runtime(servable, wanted, source_runtime, advice.reasons)
    single = chosen.at(1)
    assert single is not None
    if single.median_ms < _SMALL_MODEL_MS:
        advice.reasons.append(
            f"the model computes one row in {single.median_ms:.3f} ms: a request's time will be mostly transport and"
            " Python around the model, so the runtime matters little end to end; measure with servekit bench")
    _choose_batching(advice, chosen, wanted)
    if chosen.candidate.threads == 1 and cores > 1 and "throughput" in wanted:
        advice.instances = min(cores, 4)
        advice.reasons.append(
            f"instances: {advice.instances}: one thread per call measured best, so {advice.instances} instances"
            " use that many cores at once (estimated, not measured together: check with servekit bench)")
    if chosen.candidate.runtime != "onnx" and chosen.candidate.threads == 1 and cores > 1:
        advice.next_steps.append("run the server with OMP_NUM_THREADS=1 (torch reads its thread count from it)")
    if chosen.candidate.prepare:
        advice.next_steps.insert(0, f"make the model file first: {chosen.candidate.prepare}")
    return advice


def _choose_runtime(curves: list[Curve], wanted: Requirements, source_runtime: str | None,
                    reasons: list[str]) -> Curve:
    def latency(curve: Curve) -> float:
        point = curve.at(1)
        assert point is not None
        return point.median_ms

    def peak(curve: Curve) -> float:
        best = curve.peak()
        return best.rows_per_s if best else 0.0

    fastest, busiest = min(curves, key=latency), max(curves, key=peak)
    if "latency" in wanted and "throughput" in wanted:
        # Each ratio to the best raised to its requirement's weight: latency=2 counts 10 % slower as
        # much as 21 % less throughput.
        w_latency, w_throughput = wanted["latency"], wanted["throughput"]
        chosen = max(curves, key=lambda c: (latency(fastest) / latency(c)) ** w_latency
                     * (peak(c) / max(peak(busiest), 1e-9)) ** w_throughput)
        basis = "the best product of single-row latency and peak throughput"
        if w_latency != w_throughput:
            basis += f", weighted {w_latency:g} to {w_throughput:g} (each ratio to the best to its weight's power)"
    elif "throughput" in wanted:
        chosen, basis = busiest, "the highest peak throughput"
    elif "latency" in wanted:
        chosen, basis = fastest, "the lowest single-row latency"
    else:
        native = [c for c in curves if c.candidate.runtime == source_runtime]
        chosen = min(native or curves, key=latency)
        basis = "the model's own format (no conversion, errors point at your code)" if native else "speed"
    reasons.append(f"runtime: {_name(chosen)}, chosen for {basis}")
    reasons.append(f"{_name(chosen)}: {latency(chosen):.3f} ms per single-row call (median),"
                   f" peak {peak(chosen):,.0f} rows/s at batch {_peak_batch(chosen)}")
    for other in sorted(curves, key=latency):
        if other is not chosen:
            reasons.append(f"  vs {_name(other)}: {latency(other):.3f} ms ({latency(other) / latency(chosen):.2f}x),"
                           f" peak {peak(other):,.0f} rows/s ({peak(other) / max(peak(chosen), 1e-9):.2f}x)")
    return chosen


def _choose_batching(advice: Recommendation, curve: Curve, wanted: Requirements) -> None:
    single, best = curve.at(1), curve.peak()
    assert single is not None and best is not None
    knee = next(p for p in curve.points if p.rows_per_s >= _KNEE * best.rows_per_s)
    size = knee.batch
    if "latency" in wanted:
        bound = max(2 * single.median_ms, single.median_ms + 1.0)
        fitting = [p.batch for p in curve.points if p.median_ms <= min(bound, _LATENCY_BUDGET_MS)]
        size = min(size, max(fitting, default=1))
    chosen = curve.at(size) or single
    gain = chosen.rows_per_s / single.rows_per_s
    advice.max_batch_size = size
    if "latency" in wanted or size == 1:
        advice.max_queue_delay_ms = 1.0
    else:  # about one batch's compute time: the next batch gathers while this one runs
        advice.max_queue_delay_ms = min(max(round(chosen.median_ms * 2) / 2, 1.0), _LATENCY_BUDGET_MS)
    if size == 1:
        advice.reasons.append(f"batching: off; larger batches gave at most {best.rows_per_s / single.rows_per_s:.2f}x"
                              " the rows/s of single rows")
        return
    advice.reasons.append(
        f"batching: up to {size} rows, {gain:.1f}x the rows/s of single rows ({chosen.rows_per_s:,.0f} against"
        f" {single.rows_per_s:,.0f}), {chosen.median_ms:.3f} ms per batch; a lone request never waits"
        f" (max_queue_delay_ms {advice.max_queue_delay_ms:g} applies only while the model is busy)")
    if gain < 1.5:
        advice.reasons.append("the model's compute gains little from batching; per-request costs outside the model"
                              " (transport, decoding) are not batched away: measure end to end with servekit bench")


def _choose_protocol(advice: Recommendation, wanted: Requirements) -> None:
    transports = [(pattern, score) for pattern, score in rank_patterns(wanted) if pattern.name in _PROTOCOLS]
    pattern, score = transports[0]
    advice.protocol, advice.protocol_text = _PROTOCOLS[pattern.name]
    advice.handler = "flexibility" in wanted
    advice.reasons.append(f"protocol: {advice.protocol_text}; the decision matrix scores {pattern.name} {score:g} of"
                          f" {5 * sum(wanted.values()):g} for {describe_requirements(wanted)} (a weighted sum of"
                          " 0-5 scores: guidance, not measured here)")
    if advice.protocol in ("grpc", "http"):
        advice.reasons.append("servekit serves HTTP and gRPC at once; measure both on your server with"
                              " `servekit bench URL --model M --compare grpc@HOST:PORT`")
    if advice.handler:
        advice.reasons.append("flexibility: put custom pre/post-processing in a handler.py (servekit.BaseHandler)")


def _name(curve: Curve) -> str:
    threads = curve.candidate.threads
    return f"{curve.candidate.label} ({'default threads' if threads == 0 else f'{threads} thread(s)'})"


def _peak_batch(curve: Curve) -> int:
    best = curve.peak()
    return best.batch if best else 1

