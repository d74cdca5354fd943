"""A small Dockerfile reader for the tests: instructions per stage, JSON-form commands, ENV pairs.

It understands what deploy/Dockerfile uses (comments, line continuations, ``FROM ... AS name``,
exec-form JSON arrays, ``ENV k=v ...``), not the whole Dockerfile grammar.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Instruction", "Stage", "parse_dockerfile"]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD (after its options)."""
        start = self.arguments.index("[")
        command = json.loads(self.arguments[start:])
        assert isinstance(command, list) and all(isinstance(word, str) for word in command)
        return command

    def env_pairs(self) -> dict[str, str]:
        """``ENV a=1 b=2``; values may be quoted."""
        pairs: dict[str, str] = {}
        for word in shlex.split(self.arguments):
            name, _, value = word.partition("=")
            pairs[name] = value
        return pairs


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {len(found)}"
        return found[0]

    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for item in self.all("ENV"):
            merged.update(item.env_pairs())
        return merged


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_dockerfile(path: Path) -> tuple[list[Instruction], list[Stage]]:
    """(instructions before the first FROM, the stages in order)."""
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, arguments = line.partition(" ")
        item = Instruction(keyword.upper(), arguments.strip())
        if item.keyword == "FROM":
            words = item.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(item)
        else:
            preamble.append(item)
    return preamble, stages
