"""The memory inspector: a static page at ``/ui/`` and the read-only routes it needs.

The page (``server/ui/``: HTML, CSS and JS shipped in the package, no build step, no
CDN) uses relative URLs only, so it works wherever the memory app is mounted. It
holds no data itself: every value comes from the API with the user's key, so the
page and its tiny config are public (``public = True``) while the data routes are not.
``--ui-allow-edit`` only shows edit controls; the writes go through the ordinary
API and its keys, which remain the access control.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store.base import SCOPES
from . import access
from .http import int_param, json_response, parse_scope
from .routes import Served

if TYPE_CHECKING:
    from .app import MemoryService

UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Same-origin everything, no inline code: the page never runs anything it did not ship.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SCOPES_MAX_LIMIT = 10_000

_ERRORS = {str(status): {"$ref": f"#/components/responses/E{status}"} for status in (400, 401, 503)}
OPENAPI_PATHS: dict[str, Any] = {
    # How /api/v1/openapi.json describes the one API route of this module.
    "/memory/scopes": {
        "get": {
            "summary": "ext: scope ids that hold keys, with key counts (for the inspector)",
            "parameters": [
                {
                    "name": "scope",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": list(SCOPES)},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": SCOPES_MAX_LIMIT},
                    "description": "at most this many scope ids (default 1000)",
                },
            ],
            "responses": {
                "200": {
                    "description": "ordered by scope (resolution order), then scope id",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["scope", "scope_id", "keys"],
                                    "properties": {
                                        "scope": {"enum": list(SCOPES)},
                                        "scope_id": {"type": "string"},
                                        "keys": {"type": "integer", "minimum": 1},
                                    },
                                },
                            }
                        }
                    },
                },
                **_ERRORS,
            },
        }
    }
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    folder = resources.files(__package__).joinpath("ui")
    assets = {}
    for name, media_type in UI_FILES.items():
        body = folder.joinpath(name).read_bytes()
        assets[name] = _Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return assets


def _route(path: str, endpoint: Any, *, at_root: bool, public: bool) -> Served:
    return Served(Route(path, endpoint, methods=["GET"]), public=public, at_root=at_root)


def routes(service: MemoryService) -> list[Served]:
    assets = _load_assets()
    headers = {
        "Cache-Control": "no-cache",  # revalidate (ETag) so an upgrade shows at once
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def serve(name: str) -> Any:
        asset = assets[name]

        async def endpoint(request: Request) -> Response:
            if request.headers.get("if-none-match") == asset.etag:
                return Response(status_code=304, headers={**headers, "ETag": asset.etag})
            return Response(
                asset.body, media_type=asset.media_type, headers={**headers, "ETag": asset.etag}
            )

        return endpoint

    async def to_slash(request: Request) -> Response:
        # Relative, so it stays under whatever prefix the host mounted us at.
        return Response(status_code=307, headers={"Location": "ui/"})

    async def config(request: Request) -> Response:
        return json_response(
            {"allow_edit": service.settings.ui_allow_edit}, headers={"Cache-Control": "no-store"}
        )

    async def scopes(request: Request) -> Response:
        """``GET /api/v1/memory/scopes[?scope=S][&limit=N]``: scope ids holding keys + counts."""
        scope = parse_scope(request.query_params.get("scope"))
        limit = int_param(
            request.query_params.get("limit"),
            "limit",
            minimum=1,
            maximum=SCOPES_MAX_LIMIT,
            default=1000,
        )
        store = await service.ready()
        summaries = await store.scopes(scope, limit=limit or 1000)
        key = access.current()
        return json_response(
            [
                {"scope": s.scope, "scope_id": s.scope_id, "keys": s.keys}
                for s in summaries
                if key.can_read(s.scope, s.scope_id)  # the inspector shows only what it may read
            ]
        )

    return [
        _route("/ui", to_slash, at_root=True, public=True),
        _route("/ui/", serve("index.html"), at_root=True, public=True),
        _route("/ui/app.js", serve("app.js"), at_root=True, public=True),
        _route("/ui/style.css", serve("style.css"), at_root=True, public=True),
        _route("/ui/config.json", config, at_root=True, public=True),
        _route("/memory/scopes", scopes, at_root=False, public=False),
    ]
