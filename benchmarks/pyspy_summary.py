"""Summarise a py-spy raw profile (collapsed stacks) as markdown: where the server's time goes.

    python benchmarks/pyspy_summary.py PROFILE.txt [--top 15]

Reads ``py-spy record --format raw`` output, ideally recorded with ``--threads`` so each
stack starts with ``thread (TID): NAME``. Reports, as a share of the non-idle samples:
each thread's share, self time grouped by library (the leaf frame's file), and the
functions with the most self and inclusive time. The same file opens as a flame graph
in https://www.speedscope.app (it reads collapsed stacks).

Python frames only: time inside a C extension (orjson, numpy, onnxruntime's C++) is
charged to the Python line that called it.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Profile", "categorise", "read_profile", "summary_markdown"]

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# First match wins; matched against the leaf frame's (shortened) file name.
_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("onnxruntime (Session.run)", ("onnxruntime/",)),
    ("servekit codecs (JSON <-> tensors)", ("servekit/codecs/",)),
    ("servekit HTTP routes and bodies", ("servekit/http/",)),
    ("servekit data plane and types", ("servekit/dataplane.py", "servekit/types.py")),
    ("servekit batching", ("servekit/batching/",)),
    ("servekit runtimes", ("servekit/runtimes/",)),
    ("other servekit", ("servekit/",)),
    ("uvicorn (httptools protocol)", ("uvicorn/",)),
    ("starlette / fastapi (routing, request, response)", ("starlette/", "fastapi/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("numpy", ("numpy/",)),
    ("asyncio (event loop, futures)", ("asyncio/",)),
    ("threads and executor", ("threading.py", "concurrent/", "queue.py")),
]


# Frames every stack of a thread passes through (interpreter start, CLI, server start,
# thread bootstrap): left out of the inclusive table, where they would only say "100%".
_ENTRY_FILES = (
    "<frozen runpy>", "click/", "uvicorn/main.py", "uvicorn/server.py", "uvicorn/_compat.py", "asyncio/runners.py",
    "asyncio/base_events.py", "threading.py", "servekit/__main__.py", "servekit/cli/", "servekit/server.py",
)


@dataclass
class Profile:
    total: int = 0
    by_thread: Counter[str] = field(default_factory=Counter)
    self_by_function: Counter[str] = field(default_factory=Counter)
    self_by_line: Counter[str] = field(default_factory=Counter)
    inclusive_by_function: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)


def _function_key(frame: str) -> tuple[str, str]:
    """('function (file)', file) for a 'function (file:line)' frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return f"{match['function']} ({match['file']})", match["file"]


def categorise(file: str) -> str:
    for name, prefixes in _CATEGORIES:
        if any(prefix in file for prefix in prefixes):
            return name
    return "other (stdlib, click, ...)"


def read_profile(path: Path) -> Profile:
    profile = Profile()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "all threads"
        if frames and frames[0].startswith("thread ("):
            thread = frames.pop(0).split(": ", 1)[-1]
        if not frames:
            continue
        profile.total += count
        profile.by_thread[thread] += count
        leaf_function, leaf_file = _function_key(frames[-1])
        profile.self_by_function[leaf_function] += count
        profile.self_by_line[frames[-1]] += count
        profile.by_category[categorise(leaf_file)] += count
        for function, file in {_function_key(frame) for frame in frames}:
            if not any(entry in file for entry in _ENTRY_FILES):
                profile.inclusive_by_function[function] += count
    return profile


def _table(title: str, counts: Counter[str], total: int, top: int) -> str:
    rows = [f"| {title} | % of samples |", "|---|---:|"]
    rows += [f"| `{name}` | {100 * n / total:.1f} |" for name, n in counts.most_common(top)]
    return "\n".join(rows)


def summary_markdown(profile: Profile, top: int = 15) -> str:
    if profile.total == 0:
        return "(the profile holds no samples)"
    total = profile.total
    return "\n\n".join([
        f"{total} non-idle samples; percentages are of those, summed over threads. Self time is the "
        "reliable figure; inclusive time undercounts, as some stacks come back cut short (sampling "
        "without pausing the process, coroutines resumed from the C event loop).",
        _table("thread", profile.by_thread, total, top),
        _table("self time by library (leaf frame)", profile.by_category, total, top),
        _table("self time by function", profile.self_by_function, total, top),
        _table("self time by line", profile.self_by_line, total, top),
        _table("inclusive time by function (start-up frames left out)", profile.inclusive_by_function, total, top),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description="Summarise a py-spy raw profile as markdown.")
    parser.add_argument("profile", type=Path, help="output of py-spy record --format raw")
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    args = parser.parse_args()
    print(summary_markdown(read_profile(args.profile), args.top))


if __name__ == "__main__":
    main()
