"""Every Python sample in docs/agents.md and docs/concepts.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "agents.md", ROOT / "docs" / "concepts.md"]


def samples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)):
            found.append((f"{doc.name}#{i}", code))
    return found


def test_agents_doc_has_samples() -> None:
    assert len([name for name, _ in samples() if name.startswith("agents.md")]) >= 7


@pytest.mark.parametrize(("name", "code"), samples(), ids=[name for name, _ in samples()])
def test_sample_runs(name: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # samples that open ./something.db do it here
    exec(compile(code, name, "exec"), {"__name__": f"docs_sample_{name}"})
