"""The package's top level: names import on first use, and the store imports alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentfield_asgi


def test_every_exported_name_resolves() -> None:
    for name in agentfield_asgi.__all__:
        assert getattr(agentfield_asgi, name).__name__ == name
    assert set(agentfield_asgi.__all__) <= set(dir(agentfield_asgi))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Agnt'"):
        agentfield_asgi.Agnt  # type: ignore[attr-defined]  # noqa: B018


def test_the_sqlite_writer_process_imports_no_web_stack() -> None:
    """What the writer process imports: no Starlette, httpx or numpy (it starts fast)."""
    code = (
        "import sys, agentfield_asgi.store.sqlite.writer_process; "
        "print(sorted(m for m in ('starlette', 'httpx', 'numpy', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
