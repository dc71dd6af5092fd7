"""Building the app inside uvicorn worker processes from exported settings."""

from __future__ import annotations

import os
from dataclasses import asdict

from starlette.types import ASGIApp

from ..codec import dumps, loads
from ..settings import Settings
from .app import create_memory_app

_ENV = "AGENTFIELD__SERVE_SETTINGS"


def export_settings(settings: Settings) -> None:
    """Put the resolved settings where worker processes (:func:`app_from_env`) find them."""
    os.environ[_ENV] = dumps(asdict(settings)).decode()


def app_from_env() -> ASGIApp:
    """The memory app for a uvicorn worker: settings exported by ``serve``, else from
    ``AGENTFIELD_*`` variables."""
    raw = os.environ.get(_ENV)
    if not raw:
        return create_memory_app(settings=Settings.from_env()).app
    values = loads(raw)
    for name, value in values.items():
        if isinstance(value, list):  # JSON has no tuples
            values[name] = tuple(value)
    return create_memory_app(settings=Settings(**values)).app
