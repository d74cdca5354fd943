"""What ``servekit advise`` prints: the decision matrix, the measurements, the recommendation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from rich.console import Console
from rich.table import Table

from servekit.toolkit.advise import Recommendation, describe_requirements
from servekit.toolkit.matrix import PATTERNS, REQUIREMENTS, rank_patterns
from servekit.toolkit.measure import Curve, Point, batch_sizes

__all__ = ["print_matrix", "print_measurements", "print_recommendation"]


def print_matrix(requirements: Mapping[str, float] | Iterable[str], console: Console) -> None:
    """The static matrix for ``requirements`` (name -> weight, or names at weight 1; every row at weight 1
    when none), the weighted sums, and the best fit in servekit."""
    given = dict(requirements) if isinstance(requirements, Mapping) else dict.fromkeys(requirements, 1.0)
    rows = given or dict.fromkeys(REQUIREMENTS, 1.0)
    weighted = any(weight != 1 for weight in rows.values())
    table = Table(title="Decision matrix (0-5, guidance: not measured)")
    table.add_column("requirement")
    table.add_column("weight", justify="right")
    for pattern in PATTERNS:
        table.add_column(pattern.name, justify="right")
    for name, weight in rows.items():
        cells = (f"{p.scores[name]}" + (f" x{weight:g} = {p.scores[name] * weight:g}" if weighted else "")
                 for p in PATTERNS)
        table.add_row(f"{name} ({REQUIREMENTS[name]})", f"{weight:g}", *cells)
    ranked = rank_patterns(rows)
    totals = {pattern.name: score for pattern, score in ranked}
    label = "weighted sum" if weighted else "total"
    table.add_row(f"[bold]{label}[/]", "", *(f"[bold]{totals[p.name]:g}[/]" for p in PATTERNS))
    console.print(table)
    best_score = ranked[0][1]
    for pattern, score in ranked:
        marker = "best fit" if score == best_score else "then"
        console.print(f"{marker}: {pattern.name} ({label} {score:g}) -> in servekit: {pattern.servekit}")
    console.print("These scores are the usual guidance, not measurements: `servekit advise MODEL` measures the"
                  " runtimes on your model, `servekit bench` the protocols on your server.")


def print_measurements(curves: list[Curve], largest_batch: int, console: Console) -> None:
    sizes = [size for size in batch_sizes(largest_batch) if any(c.at(size) for c in curves)]
    cells_of: tuple[tuple[str, Callable[[Point], str]], ...] = (
        ("median ms per call", lambda p: f"{p.median_ms:.3f}"), ("rows/s", lambda p: f"{p.rows_per_s:,.0f}"))
    for title, value in cells_of:
        table = Table(title=f"Measured: {title}, by batch size")
        table.add_column("runtime")
        table.add_column("threads", justify="right")
        for size in sizes:
            table.add_column(str(size), justify="right")
        for curve in curves:
            threads = curve.candidate.threads
            cells = []
            for size in sizes:
                point = curve.at(size)
                cells.append(value(point) if point else "-")
            label = curve.candidate.label + ("" if curve.candidate.runtime else " (reference)")
            table.add_row(label, "default" if threads == 0 else str(threads), *cells)
        console.print(table)
    for curve in curves:
        if curve.error:
            console.print(f"{curve.candidate.label}: stopped at {curve.error}")
        elif curve.skipped:
            console.print(f"{curve.candidate.label} ({curve.candidate.threads}): budget spent before batch"
                          f" {', '.join(map(str, curve.skipped))}")


def print_recommendation(advice: Recommendation, console: Console) -> None:
    console.print(f"[bold]Recommendation[/] for {describe_requirements(advice.requirements)}:")
    if advice.curve is not None:
        candidate = advice.curve.candidate
        threads = "its default threads" if candidate.threads == 0 else f"{candidate.threads} thread(s)"
        console.print(f"  runtime   {candidate.runtime} ({candidate.label}, {threads})")
        console.print(f"  batching  max_batch_size {advice.max_batch_size}, max_queue_delay_ms"
                      f" {advice.max_queue_delay_ms:g}" + (f", instances {advice.instances}" if advice.instances > 1
                                                           else ""))
    console.print(f"  protocol  {advice.protocol_text}")
    if advice.handler:
        console.print("  handler   yes: custom pre/post-processing in handler.py")
    console.print("Why:")
    for reason in advice.reasons:
        console.print(f"  {reason}" if reason.startswith("  ") else f"  - {reason}")
    for step in advice.next_steps:
        console.print(f"Next: {step}")
