"""Building the app inside uvicorn worker processes from exported settings."""

from __future__ import annotations

import os
from dataclasses import asdict

from ..codec import dumps, loads
from ..settings import Settings
from .app import create_memory_app

_ENV = "AGENTFIELD__SERVE_SETTINGS"


def export_settings(settings: Settings) -> None:
    """Put the resolved settings where worker processes (:func:`app_from_env`) find them."""
    os.environ[_ENV] = dumps(asdict(settings)).decode()


def app_from_env():  # type: ignore[no-untyped-def]
    raw = os.environ.get(_ENV)
    if raw:
        values = loads(raw)
        for name, value in values.items():
            if isinstance(value, list):
                values[name] = tuple(value)
        settings = Settings(**values)
    else:
        settings = Settings.from_env()
    return create_memory_app(settings=settings).app
