"""API-key authentication and CORS around the memory app. (API keys: issue 7.)"""

from __future__ import annotations

from starlette.types import ASGIApp

from ..settings import Settings


def wrap_security(app: ASGIApp, settings: Settings) -> ASGIApp:
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Next-Cursor"],
        )
    return app
