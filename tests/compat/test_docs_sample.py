"""docs/compatibility.md's example runs as written against a live server and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agentfield_asgi.testing import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
BASE_URL_LINE = re.compile(r'^BASE_URL = "[^"]*"', re.MULTILINE)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_compatibility_example_prints_what_the_doc_says(live_server: ServerProcess) -> None:
    # the page's first example (the later ones run agent nodes: tests/docs runs them)
    code = blocks("python")[0]
    expected = blocks("text")[0]
    assert BASE_URL_LINE.search(code), "the example must define BASE_URL on its own line"
    code = BASE_URL_LINE.sub(f'BASE_URL = "{live_server.url}"', code)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
