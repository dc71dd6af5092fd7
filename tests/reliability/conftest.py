"""The reliability suite starts services with chosen settings through the suite's
``make_service`` fixture (``tests/conftest.py``): ``async with make_service(**settings)``."""

from __future__ import annotations

from agentfield_asgi.testing.services import ServiceFactory

__all__ = ["ServiceFactory"]
