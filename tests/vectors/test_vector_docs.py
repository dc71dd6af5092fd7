"""The sample at the top of docs/vectors.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "vectors.md"


def test_vectors_doc_sample_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the sample opens ./vectors-demo.db
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[0]
    exec(compile(code, "docs/vectors.md", "exec"), {"__name__": "docs_vectors_sample"})
    assert (tmp_path / "vectors-demo.db").exists()
