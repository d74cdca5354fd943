"""The toolkit's public names, and that torch stays optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import servekit.toolkit

BLOCK_TORCH = """
import sys
sys.modules["torch"] = None  # as if torch were not installed
from click.testing import CliRunner
from servekit.cli import main
for args in (["advise", "--require", "edge"], ["convert", "model.pt", "--input-shape", "1,4", "-o", "out"],
             ["advise", "model.pt", "--input-shape", "1,4"]):
    result = CliRunner().invoke(main, args)
    print(result.exit_code, result.output.strip().splitlines()[-1])
"""


def test_public_api_is_pinned() -> None:
    assert sorted(servekit.toolkit.__all__) == sorted([
        "PATTERNS", "REQUIREMENTS", "BenchOptions", "BenchResult", "ConvertOptions", "ConvertResult", "ParityError",
        "Recommendation", "ToolkitError", "convert_model", "parse_requirements", "rank_patterns", "recommend",
        "run_bench",
    ])


def test_without_torch_the_commands_say_which_extra_to_install(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not read")
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    matrix, convert, advise = done.stdout.strip().splitlines()
    assert matrix.startswith("0 ")
    assert convert.startswith("1 ") and "pip install 'servekit[torch]'" in convert
    assert advise.startswith("1 ") and "pip install 'servekit[torch]'" in advise
