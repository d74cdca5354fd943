"""What ``servekit bench`` shows and keeps: a table, comparisons, results.json and plot.png."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from servekit.toolkit.bench import BenchResult, RunRecord

__all__ = ["comparison_lines", "print_table", "write_json", "write_plot"]


def print_table(result: BenchResult, console: Console) -> None:
    open_loop = any(run.mode == "open" for run in result.runs)
    table = Table(title=f"servekit bench: {result.options.model}, {result.options.batch} row(s) per request"
                  + ("" if result.complete else " (INCOMPLETE: time limit reached)"))
    for column in ("series", "load", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        table.add_column(column, justify="left" if column in ("series", "load") else "right")
    for run in result.runs:
        errors = str(run.errors) if not run.errors else f"[red]{run.errors}[/] " + ", ".join(
            f"{kind} x{count}" for kind, count in run.error_kinds.items())
        table.add_row(run.series, run.load, f"{run.throughput_rps:,.0f}", _ms(run.p50_ms), _ms(run.p90_ms),
                      _ms(run.p99_ms), _ms(run.max_ms), errors)
    console.print(table)
    if open_loop:
        console.print("open loop: latency counts from each request's scheduled start (queueing included)")
    busy = [run for run in result.runs if run.client_cpu > 0.9]
    if busy:
        console.print(f"[yellow]note:[/] the load generator was CPU-bound in {len(busy)} run(s) (client CPU > 90 %"
                      " of a core): the server may be faster than these numbers")
    for line in comparison_lines(result.runs):
        console.print(line)


def comparison_lines(runs: list[RunRecord]) -> list[str]:
    """With two series: at each common load level, the second's req/s and p99 as multiples of the first's."""
    labels = list(dict.fromkeys(run.series for run in runs))
    if len(labels) != 2:
        return []
    first = {run.load: run for run in runs if run.series == labels[0]}
    lines = []
    for run in (run for run in runs if run.series == labels[1]):
        base = first.get(run.load)
        if base is None or not base.throughput_rps or not base.p99_ms or run.p99_ms is None:
            continue
        lines.append(f"{labels[1]} vs {labels[0]} at {run.load}: {run.throughput_rps / base.throughput_rps:.2f}x the"
                     f" req/s, {run.p99_ms / base.p99_ms:.2f}x the p99 latency")
    return lines


def write_json(result: BenchResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")


def write_plot(result: BenchResult, path: Path) -> str | None:
    """Latency (p50 dashed, p99 solid) against throughput, one colour per series. Returns why not, if not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return "no plot: matplotlib is not installed (pip install 'servekit[bench]')"
    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=100)
    for index, label in enumerate(dict.fromkeys(run.series for run in result.runs)):
        runs = [run for run in result.runs if run.series == label]
        points = [(run.throughput_rps, run.p50_ms, run.p99_ms, run) for run in runs
                  if run.p50_ms is not None and run.p99_ms is not None]
        if not points:
            continue
        colour = f"C{index}"
        throughput = [point[0] for point in points]
        axes.plot(throughput, [point[2] for point in points], "o-", color=colour, label=f"{label} p99")
        axes.plot(throughput, [point[1] for point in points], "s--", color=colour, alpha=0.6, label=f"{label} p50")
        for x, _, p99, run in points:
            axes.annotate(str(run.concurrency or f"{run.target_rate:g}/s"), (x, p99),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("throughput (req/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(f"servekit bench: {result.options.model} (labels: clients or target rate)")
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
    return None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
