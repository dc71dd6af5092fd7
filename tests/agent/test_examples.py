"""Run each example exactly as examples/README.md says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "examples" / "README.md"


def readme_commands() -> list[str]:
    """The one-line ``.venv/bin/python examples/...`` commands of the README's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith(".venv/bin/python examples/")
    ]


def test_readme_has_one_command_per_example() -> None:
    assert readme_commands() == [
        ".venv/bin/python examples/support/run.py",
        ".venv/bin/python examples/recruiter/run.py",
    ]


@pytest.mark.parametrize("command", readme_commands())
def test_example_runs(command: str) -> None:
    args = [sys.executable, *command.split()[1:]]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("example: OK")
