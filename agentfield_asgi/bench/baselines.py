"""The floor of the stack: apps that answer the memory routes with a fixed record,
served by the same uvicorn settings and called by the same client as ours.

``starlette_app``: a Starlette route with ``Request``/``Response`` that reads the
body and returns a fixed JSON record. ``asgi_app``: a plain ASGI callable doing
the same with no framework at all.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..codec import dumps, now_us
from ..store.base import Record

_RECORD = Record("global", "global", "bench-key", b'{"n":1}', now_us(), now_us(), 1).to_json()
_LIST = b"[" + _RECORD + b"]"
_HEALTH = dumps({"status": "ok"})


async def _record(request: Request) -> Response:
    await request.body()
    return Response(_RECORD, media_type="application/json")


async def _empty(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


async def _list(request: Request) -> Response:
    return Response(_LIST, media_type="application/json")


async def _health(request: Request) -> Response:
    return Response(_HEALTH, media_type="application/json")


starlette_app = Starlette(
    routes=[
        Route("/api/v1/health", _health),
        Route("/api/v1/memory/get", _record, methods=["POST"]),
        Route("/api/v1/memory/set", _record, methods=["POST"]),
        Route("/api/v1/memory/delete", _empty, methods=["POST"]),
        Route("/api/v1/memory/list", _list),
    ]
)

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def asgi_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Plain ASGI: drain the body, answer the fixed record (204 for delete)."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    path = scope["path"]
    if path.endswith("/delete"):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = _LIST if path.endswith("/list") else _RECORD
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
