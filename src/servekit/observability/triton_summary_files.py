"""Triton's latency summaries across worker processes (``--workers N`` with ``summary_latencies=true``).

Counters go through prometheus-client's multiprocess files; a summary's quantiles cannot (a file
holds numbers that add up, not a sketch). So each worker process writes its summary series to
``<PROMETHEUS_MULTIPROC_DIR>/triton_summaries_<pid>.json`` at most once a second, from a daemon
thread, whenever they changed: per series its family, model, version, quantiles, count, sum and the
DDSketch of each 12-second slice of the window (DDSketch's protobuf form, base64). The file is
replaced whole (written beside, then renamed), so a reader never sees half of one.

The metrics page (``triton_metrics.render``) adds to its own process's series those of every
other process's file: counts and sums add up, the slices are merged into one window. A worker
that died leaves its file: its counts stay (they must never go backwards), its slices leave the
window within a minute. A worker's page is up to a second behind its requests; with one worker
the page reads the series in memory, as they are.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from ddsketch import DDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto

from servekit.observability.triton_summaries import LatencySummary

__all__ = ["FILE_PATTERN", "PUBLISH_INTERVAL_S", "Merged", "Publisher", "SeriesKey", "read_other_processes"]

log = logging.getLogger("servekit.metrics")

PUBLISH_INTERVAL_S: Final = 1.0
FILE_PATTERN: Final = "triton_summaries_*.json"
SeriesKey = tuple[str, str, str]  # family, model, version


def _encode(sketch: DDSketch) -> str:
    message = DDSketchProto.to_proto(sketch)  # type: ignore[no-untyped-call]
    return base64.b64encode(message.SerializeToString()).decode()


def _decode(text: str) -> DDSketch:
    message = DDSketchMessage()
    message.ParseFromString(base64.b64decode(text))
    sketch: DDSketch = DDSketchProto.from_proto(message)  # type: ignore[no-untyped-call]
    return sketch


class Publisher:
    """Writes this process's series (``series()``: key -> summary) to its file while they change."""

    def __init__(self, folder: Path, series: Callable[[], dict[SeriesKey, LatencySummary]]) -> None:
        self._path = folder / f"triton_summaries_{os.getpid()}.json"
        self._series = series
        self._written: dict[SeriesKey, int] | None = None

    def start(self) -> Publisher:
        """Write every ``PUBLISH_INTERVAL_S`` from a daemon thread, for the life of the process."""
        threading.Thread(target=self._run, name="servekit-triton-summaries", daemon=True).start()
        return self

    def _run(self) -> None:
        while True:
            time.sleep(PUBLISH_INTERVAL_S)
            try:
                self.publish()
            except Exception:
                log.exception("writing the Triton summaries of process %d failed", os.getpid())

    def publish(self) -> None:
        """Write the file now, unless no count changed since the last write."""
        series = dict(self._series())
        counts = {key: summary.count for key, summary in series.items()}
        if counts == self._written:
            return
        entries = []
        for (family, model, version), summary in series.items():
            count, total, slices = summary.state()
            entries.append({"family": family, "model": model, "version": version, "quantiles": summary.quantiles,
                            "count": count, "sum": total,
                            "slices": [[number, _encode(sketch)] for number, sketch in slices]})
        staged = self._path.with_suffix(".json.new")
        staged.write_text(json.dumps(entries), encoding="utf-8")
        staged.replace(self._path)
        self._written = counts


class Merged:
    """One series over several processes: counts and sums added, slices side by side."""

    __slots__ = ("count", "quantiles", "slices", "total")

    def __init__(self, quantiles: Iterable[float]) -> None:
        self.quantiles = tuple(quantiles)
        self.count = 0
        self.total = 0
        self.slices: list[tuple[int, DDSketch]] = []


def read_other_processes(folder: Path) -> dict[SeriesKey, Merged]:
    """The series written by every process but this one (a file that cannot be read is skipped)."""
    merged: dict[SeriesKey, Merged] = {}
    own = f"triton_summaries_{os.getpid()}.json"
    for path in sorted(folder.glob(FILE_PATTERN)):
        if path.name == own:
            continue
        try:
            entries: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in entries:
            key = (str(entry["family"]), str(entry["model"]), str(entry["version"]))
            series = merged.get(key)
            if series is None:
                series = merged[key] = Merged(float(q) for q in entry["quantiles"])
            series.count += int(entry["count"])
            series.total += int(entry["sum"])
            series.slices.extend((int(number), _decode(text)) for number, text in entry["slices"])
    return merged
