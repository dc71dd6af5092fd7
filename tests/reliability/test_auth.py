"""API keys: 401 without or with a wrong key on every route kind; accepted as X-API-Key,
Bearer, and ``?api_key=`` only on event streams; constant-time comparison; keys never logged;
the ``serve`` warning for a non-loopback host without keys."""

from __future__ import annotations

import hmac
import logging
import socket
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from agentfield_asgi import cli
from agentfield_asgi.server import auth
from agentfield_asgi.server.app import MemoryService
from agentfield_asgi.server.openapi import served_api_routes
from agentfield_asgi.settings import Settings
from agentfield_asgi.testing import ServerProcess

from .conftest import ServiceFactory
from .helpers import http_client

KEYS = ("key-one", "key-TWO/+=")
GOOD_BODY = {
    "key": "k",
    "data": 1,
    "keys": ["k"],
    "scope": "global",
    "ops": [{"op": "delete", "key": "k"}],
}


# ---------------------------------------------------------------- the middleware alone


async def _ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def _protected_host() -> Starlette:
    """A host mounting a protected app at /agentfield (as create_memory_app users do)."""
    inner = Starlette(
        routes=[
            Route("/api/v1/memory/get", _ok, methods=["GET", "POST"]),
            Route("/api/v1/memory/events/sse", _ok),
            Route("/api/v1/health", _ok),
            Route("/inspector", _ok),
            WebSocketRoute("/api/v1/memory/events/ws", _ws),
            WebSocketRoute("/api/v1/other/ws-not-events", _ws),
        ]
    )
    protected = auth.wrap_security(inner, Settings(api_keys=KEYS), public_paths=["/inspector"])
    return Starlette(routes=[Mount("/agentfield", app=protected)])


@pytest.fixture
def host() -> TestClient:
    return TestClient(_protected_host())


def test_each_credential_form(host: TestClient) -> None:
    url = "/agentfield/api/v1/memory/get"
    assert host.get(url, headers={"X-API-Key": KEYS[0]}).status_code == 200
    assert host.get(url, headers={"x-api-key": KEYS[1]}).status_code == 200
    assert host.get(url, headers={"Authorization": f"Bearer {KEYS[1]}"}).status_code == 200
    assert host.get(url, headers={"Authorization": f"bearer {KEYS[0]}"}).status_code == 200
    for headers in (
        {},
        {"X-API-Key": "nope"},
        {"X-API-Key": KEYS[0] + "x"},
        {"X-API-Key": KEYS[0][:-1]},
        {"Authorization": f"Basic {KEYS[0]}"},
        {"Authorization": "Bearer "},
    ):
        r = host.get(url, headers=headers)
        assert r.status_code == 401, headers
        body = r.json()
        assert body["code"] == "unauthorized" and set(body) == {"error", "code", "details"}
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert KEYS[0] not in r.text


def test_query_key_only_on_event_streams(host: TestClient) -> None:
    assert (
        host.get("/agentfield/api/v1/memory/events/sse", params={"api_key": KEYS[0]}).status_code
        == 200
    )
    refused = host.get("/agentfield/api/v1/memory/get", params={"api_key": KEYS[0]})
    assert refused.status_code == 401
    assert "?api_key=" not in refused.json()["details"]["accepted"]
    assert (
        host.get("/agentfield/api/v1/memory/events/sse", params={"api_key": "bad"}).status_code
        == 401
    )
    # The suffix is matched on the path, not on the query string.
    sneaky = host.get(
        "/agentfield/api/v1/memory/get", params={"api_key": KEYS[0], "x": "/events/sse"}
    )
    assert sneaky.status_code == 401


def test_public_paths(host: TestClient) -> None:
    assert host.get("/agentfield/api/v1/health").status_code == 200
    assert host.get("/agentfield/inspector").status_code == 200


def test_websocket_needs_a_key(host: TestClient) -> None:
    with host.websocket_connect(
        "/agentfield/api/v1/memory/events/ws", headers={"X-API-Key": KEYS[0]}
    ) as ws:
        assert ws.receive_text() == "hello"
    with host.websocket_connect(
        f"/agentfield/api/v1/memory/events/ws?api_key={quote(KEYS[1])}"
    ) as ws:
        assert ws.receive_text() == "hello"
    for url, headers in (
        ("/agentfield/api/v1/memory/events/ws", {}),
        ("/agentfield/api/v1/memory/events/ws?api_key=wrong", {}),
        (f"/agentfield/api/v1/other/ws-not-events?api_key={KEYS[0]}", {}),
    ):
        with pytest.raises(WebSocketDenialResponse) as denied:
            with host.websocket_connect(url, headers=headers):
                pass
        assert denied.value.status_code == 401
        assert denied.value.json()["code"] == "unauthorized"


def test_comparison_is_constant_time_over_all_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    checker = auth.KeyChecker(["first", "second", "third"])
    assert checker.accepts("first")
    assert len(calls) == 3  # a match on the first key still compares against every key
    calls.clear()
    assert not checker.accepts("nothing")
    assert len(calls) == 3
    assert not checker.accepts(None)
    assert not auth.KeyChecker([]).accepts("")


def test_redaction() -> None:
    line = "GET /api/v1/memory/events/sse?patterns=a&api_key=s3cret HTTP/1.1"
    assert "s3cret" not in auth.redact_query_keys(line)
    assert "patterns=a" in auth.redact_query_keys(line)
    record = logging.LogRecord("x", logging.INFO, "", 0, "%s %s", ("/p?api_key=abc&x=1", 200), None)
    auth.RedactKeysFilter().filter(record)
    assert "abc" not in record.getMessage() and "x=1" in record.getMessage()


# ---------------------------------------------------------------- every served route


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    if method == "GET":
        return await client.get(path, params={"scope": "global"}, **kwargs)
    return await client.request(method, path, json=GOOD_BODY, **kwargs)


async def test_every_route_needs_a_key(make_service: ServiceFactory) -> None:
    async with make_service(api_keys=KEYS) as service, http_client(service) as client:
        routes = served_api_routes(service)
        assert {"/memory/set", "/memory/get", "/memory/list", "/memory/batch"} <= set(routes)
        checked = 0
        for path, methods in routes.items():
            url = "/api/v1" + path
            for method in sorted(methods - {"WS"}):
                if path.endswith(("/events/sse",)):
                    continue  # endless stream: covered on a live server below
                if path == "/health":
                    assert (await _call(client, method, url)).status_code == 200
                    continue
                for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
                    r = await _call(client, method, url, headers=headers)
                    assert r.status_code == 401, (method, path, headers)
                    assert r.json()["code"] == "unauthorized"
                query = await _call(client, method, url + f"?api_key={KEYS[0]}")
                assert query.status_code == 401, (method, path)
                for headers in ({"X-API-Key": KEYS[0]}, {"Authorization": f"Bearer {KEYS[1]}"}):
                    r = await _call(client, method, url, headers=headers)
                    assert r.status_code != 401 and r.status_code < 500, (method, path, r.text)
                checked += 1
        assert checked >= 9
        # Nothing was written by the refused requests: the only writes were accepted ones.
        assert service.settings.api_keys == KEYS


async def test_open_without_keys(service: MemoryService) -> None:
    async with http_client(service) as client:
        r = await client.post("/api/v1/memory/set", json={"key": "k", "data": 1})
        assert r.status_code == 200


# ---------------------------------------------------------------- a real server


def test_live_server_keys_from_env_and_never_logged(tmp_path: Any) -> None:
    secret = "live-secret-4f1d"
    server = ServerProcess(
        ["--database-url", f"sqlite:///{tmp_path / 'm.db'}", "--log-level", "info", "--access-log"],
        env={"AGENTFIELD_API_KEYS": f"{secret},other-key"},
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/api/v1/health").status_code == 200
            assert (
                client.post("/api/v1/memory/set", json={"key": "k", "data": 1}).status_code == 401
            )
            ok = client.post(
                "/api/v1/memory/set", json={"key": "k", "data": 1}, headers={"X-API-Key": secret}
            )
            assert ok.status_code == 200
            r = client.post(
                "/api/v1/memory/get",
                json={"key": "k"},
                headers={"Authorization": "Bearer other-key"},
            )
            assert r.json()["data"] == 1
            assert (
                client.get(f"/api/v1/memory/list?scope=global&api_key={secret}").status_code == 401
            )
            client.get(f"/api/v1/memory/events/history?api_key={secret}")
            with client.stream("GET", f"/api/v1/memory/events/sse?api_key={secret}") as stream:
                assert stream.status_code != 401
    finally:
        server.stop()
    log = server.output()
    assert "/api/v1/memory/set" in log  # the access log is on...
    assert secret not in log and "other-key" not in log  # ...and shows no key


# ---------------------------------------------------------------- the serve warning


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("0.0.0.0", (), True),
        ("192.0.2.10", (), True),
        ("::", (), True),
        ("example.org", (), True),
        ("0.0.0.0", ("k",), False),
        ("127.0.0.1", (), False),
        ("127.8.9.10", (), False),
        ("localhost", (), False),
        ("::1", (), False),
    ],
)
def test_exposure_warning(host: str, keys: tuple[str, ...], warned: bool) -> None:
    warning = cli.exposure_warning(host, Settings(api_keys=keys))
    assert (warning is not None) is warned
    if warning:
        assert host in warning and "AGENTFIELD_API_KEYS" in warning


class _NoServer:
    """Stands in for uvicorn's server: records its config, serves nothing."""

    configs: ClassVar[list[Any]] = []

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        self.configs.append(config)
        self.started = True

    def run(self, sockets: Any = None) -> None:
        pass


def test_serve_prints_the_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    """``serve --host 0.0.0.0`` without keys warns. Nothing may listen on a public
    address here: the server is replaced, and binding anything but loopback fails."""
    real_bind = socket.socket.bind

    def loopback_only(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test refuses to bind {address!r}")
        real_bind(sock, address)

    monkeypatch.setattr(socket.socket, "bind", loopback_only)
    monkeypatch.setattr(cli, "_AnnouncingServer", _NoServer)
    monkeypatch.setattr(cli, "bind_listener", lambda host, port: socket.socket())
    monkeypatch.setattr(cli.uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setenv("AGENTFIELD__SERVE_SETTINGS", "")  # serve() exports; undone afterwards
    args = cli.build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--database-url", f"sqlite:///{tmp_path / 'm.db'}"]
    )
    with caplog.at_level(logging.WARNING, logger="agentfield_asgi"):
        cli.serve(args)
    assert any("without API keys" in r.getMessage() for r in caplog.records)
    assert _NoServer.configs and _NoServer.configs[-1].host == "0.0.0.0"  # still serves
