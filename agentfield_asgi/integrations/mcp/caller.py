"""Whose grants an MCP request runs with: the API key that opened the MCP session.

The SDK runs each Streamable HTTP session in a task of its own, so the access the
authentication middleware sets for an HTTP request (:data:`~agentfield_asgi.server.access.
CURRENT`) never reaches the tool and resource handlers. Instead:

- the endpoint binds each MCP session to the key that opened it (:class:`SessionKeys`): a
  request of that session with another key is refused (403), and it puts a :class:`Caller`
  in the scope of every HTTP request it hands to the SDK;
- every handler runs :func:`acting_as` its request's caller, which looks the key up in the
  service's key ring again (a key changed or removed by a SIGHUP reload takes effect at
  once) and sets ``CURRENT``; the routes the tools call then apply their own rules;
- a resource subscription keeps its caller and asks it before each notification.

On stdio there is no HTTP request and no caller: ``--database-url`` is the local user's
own database (full access) and ``--url`` sends ``AGENTFIELD_API_KEY`` to a service that
enforces it.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Message, Scope, Send

from ...errors import Unauthorized
from ...server.access import CURRENT, FULL, Access, KeyRing

SCOPE_KEY = "agentfield.mcp.caller"
"""ASGI scope entry holding the request's :class:`Caller` (set by the endpoint)."""
SESSION_HEADER = b"mcp-session-id"


@dataclass(frozen=True)
class Caller:
    """The API key of an MCP session (None without keys) and the ring that knows it."""

    key: str | None = field(repr=False)  # never in a repr, so never in a log
    ring: KeyRing = field(repr=False)

    def access(self) -> Access:
        """The key's grants now; :class:`Unauthorized` when a reload removed it."""
        if not self.ring:
            return FULL
        found = self.ring.lookup(self.key)
        if found is None:
            raise Unauthorized("this API key is no longer accepted")
        return found

    def may_read(self, scope: str, scope_id: str) -> bool:
        """Whether the key may read ``scope:scope_id`` now (False once it is removed)."""
        try:
            return self.access().can_read(scope, scope_id)
        except Unauthorized:
            return False


def caller_of(request: Any) -> Caller | None:
    """The caller the endpoint recorded on an HTTP request (None on stdio)."""
    scope = getattr(request, "scope", None)
    found = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return found if isinstance(found, Caller) else None


@contextlib.contextmanager
def acting_as(caller: Caller | None) -> Iterator[None]:
    """Run the body with ``caller``'s current grants as the request's access."""
    if caller is None:
        yield
        return
    token = CURRENT.set(caller.access())
    try:
        yield
    finally:
        CURRENT.reset(token)


def session_id_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == SESSION_HEADER:
            return str(value.decode("latin-1"))
    return None


class SessionKeys:
    """MCP session id -> the API key that opened the session.

    ``bind`` wraps the ``send`` of a request opening a session (no session id yet) to learn
    the id the SDK answers with; ``same_key`` tells whether a later request comes with that
    key. Entries go with a successful ``DELETE`` of the session or :meth:`clear`; ``prune``
    drops those of sessions the SDK no longer has.
    """

    MAX_BEFORE_PRUNE = 1024

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    @staticmethod
    def _encode(key: str | None) -> bytes:
        return (key or "").encode("utf-8", "surrogateescape")

    def same_key(self, session_id: str, key: str | None) -> bool:
        """True unless ``session_id`` was opened with another key (an unknown id is the
        SDK's to refuse)."""
        bound = self._keys.get(session_id)
        return bound is None or hmac.compare_digest(bound, self._encode(key))

    def bind(self, send: Send, key: str | None) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.lower() == SESSION_HEADER:
                        self._keys[value.decode("latin-1")] = self._encode(key)
            await send(message)

        return sending

    def forget_when_ended(self, send: Send, session_id: str) -> Send:
        """``send`` of a ``DELETE``: the binding goes once the SDK ended the session."""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                self._keys.pop(session_id, None)
            await send(message)

        return sending

    def prune(self, live: Any) -> None:
        """Forget sessions not in ``live`` (the SDK's open session ids), once there are many."""
        if len(self._keys) > self.MAX_BEFORE_PRUNE and isinstance(live, dict):
            for session_id in [s for s in self._keys if s not in live]:
                del self._keys[session_id]

    def clear(self) -> None:
        self._keys.clear()
