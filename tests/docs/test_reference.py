"""The configuration reference names every setting (docs/configuration.md once it exists,
else the reference section of docs/deployment.md)."""

from __future__ import annotations

from dataclasses import fields

from agentfield_asgi.settings import Settings

from .samples import ROOT


def test_every_setting_is_documented() -> None:
    page = ROOT / "docs" / "configuration.md"
    if not page.exists():
        page = ROOT / "docs" / "deployment.md"
    text = page.read_text()
    missing = [f.name for f in fields(Settings) if f"AGENTFIELD_{f.name.upper()}" not in text]
    assert not missing, f"{page.name} does not document {missing}"
