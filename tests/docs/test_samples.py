"""Every code sample in docs/*.md and README.md runs as written (see samples.py for how).

Pages are found by glob, so a page added later is covered without touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .samples import ROOT, parse_blocks, run_page

PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_samples_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    def create_database() -> str:
        return str(request.getfixturevalue("pg_cluster").create_database())

    run = run_page(page, tmp_path, create_database)
    runnable = [b for b in parse_blocks(page) if b.lang in ("python", "bash", "sh", "shell")]
    assert run.ran == len([b for b in runnable if b.skip_reason is None])


def test_skips_are_rare() -> None:
    """Marks are for what cannot run; every one gives its reason (parse_blocks insists)."""
    blocks = [b for page in PAGES for b in parse_blocks(page)]
    skipped = [b.where for b in blocks if b.skip_reason is not None]
    runnable = [b for b in blocks if b.lang in ("python", "bash") and b.skip_reason is None]
    assert len(skipped) <= max(3, len(runnable) // 10), skipped
