"""Per-key access control: which scopes a key may read and write, and whether it may
administer, from the API keys file (``--api-keys-file``, JSON or TOML).

The file format is a contract (``docs/operations.md``)::

    {"keys": [
      {"key": "k-agent-a", "read": ["actor:agent-a", "global:*"], "write": ["actor:agent-a"]},
      {"key": "k-ops", "read": ["*"], "write": ["*"], "admin": true}
    ]}

Each grant is ``scope:scope_id-glob`` (``*``, ``?``, ``[abc]`` as in event patterns) or
``*`` for everything. ``admin`` (default false) allows clearing a scope and registering
nodes. A plain ``--api-key`` has full access. The file is validated when the service is
built (:class:`AccessFileError`, with the file and the entry named, never a key) and
reloaded on SIGHUP (a file that no longer validates keeps the keys in force).

The key's :class:`Access` is set for the request by the authentication middleware
(:data:`CURRENT`, a context variable: plain ASGI, so it flows into the endpoint); the
routes ask it through :func:`current`. Without keys every request has full access.
In-process callers (the client SDK's in-process transport) carry the access they run
with into the app instead of a key (:func:`carry`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import AgentFieldError, Forbidden
from ..patterns import glob_to_regex
from ..store.base import SCOPES, ScopeRef

log = logging.getLogger("agentfield_asgi.server.access")

ENTRY_FIELDS = {"key", "read", "write", "admin"}


class AccessFileError(ValueError):
    """The API keys file cannot be used (unreadable, not JSON/TOML, not the format)."""


@dataclass(frozen=True)
class Grant:
    """``scope:glob`` (``scope`` None: every scope)."""

    scope: str | None
    match: Callable[[str], Any]
    text: str

    @classmethod
    def parse(cls, text: Any) -> Grant:
        if not isinstance(text, str) or not text:
            raise ValueError(f"a grant must be a non-empty string, got {text!r}")
        if text == "*":
            return cls(None, lambda _: True, text)
        scope, sep, pattern = text.partition(":")
        if not sep or scope not in SCOPES or not pattern:
            raise ValueError(
                f"grant {text!r} is not '*' or 'scope:scope_id-glob' with scope one of "
                f"{', '.join(SCOPES)}"
            )
        try:
            regex = re.compile(glob_to_regex(pattern), re.DOTALL)
        except AgentFieldError as exc:
            raise ValueError(f"grant {text!r}: {exc.message}") from None
        return cls(scope, regex.match, text)

    def covers(self, scope: str, scope_id: str) -> bool:
        return (self.scope is None or self.scope == scope) and bool(self.match(scope_id))


@dataclass(frozen=True)
class Access:
    """What one key may do. ``full``: everything (a plain ``--api-key``, or no keys)."""

    read: tuple[Grant, ...] = ()
    write: tuple[Grant, ...] = ()
    admin: bool = False
    full: bool = False
    name: str = field(default="", compare=False)
    """Which entry of the file (``keys[2]``), for refusals: never the key itself."""

    def can_read(self, scope: str, scope_id: str) -> bool:
        return self.full or any(g.covers(scope, scope_id) for g in self.read)

    def can_write(self, scope: str, scope_id: str) -> bool:
        return self.full or any(g.covers(scope, scope_id) for g in self.write)

    def require(self, action: str, scope: str, scope_id: str) -> None:
        """403 unless this key may ``action`` (``read`` or ``write``) ``scope:scope_id``."""
        allowed = self.can_read if action == "read" else self.can_write
        if not allowed(scope, scope_id):
            raise Forbidden(
                f"this API key may not {action} {scope}:{scope_id}",
                details={"action": action, "scope": scope, "scope_id": scope_id},
            )

    def require_admin(self, what: str) -> None:
        if not (self.full or self.admin):
            raise Forbidden(
                f"{what} needs an API key with admin rights", details={"action": "admin"}
            )

    def readable(self, chain: Sequence[ScopeRef]) -> list[ScopeRef]:
        """The scopes of a hierarchical read this key may read (403 when none)."""
        if self.full:
            return list(chain)
        allowed = [ref for ref in chain if self.can_read(*ref)]
        if not allowed:
            raise Forbidden(
                "this API key may read none of the scopes this request names",
                details={"action": "read", "scopes": [f"{s}:{i}" for s, i in chain]},
            )
        return allowed


def may_run_workflow(workflow_id: str | None) -> None:
    """``execute``: 403 unless the key may write the caller's workflow scope (or, starting
    a new workflow, holds some write grant on workflow scopes)."""
    key = current()
    if workflow_id:
        key.require("write", "workflow", workflow_id)
    elif not (key.full or any(g.scope in (None, "workflow") for g in key.write)):
        raise Forbidden(
            "starting a workflow needs an API key that may write workflow scopes",
            details={"action": "write", "scope": "workflow"},
        )


FULL = Access(full=True, name="full")
CURRENT: ContextVar[Access] = ContextVar("agentfield_access", default=FULL)


CARRIED = "agentfield.access"
"""ASGI scope entry holding the :class:`Access` of an in-process caller (see :func:`carry`):
the authentication middleware uses it instead of asking for a key. A server builds the
scope of a network request itself, so a remote client can never set it."""


def current() -> Access:
    """The access of the request being served (full without keys, or in process)."""
    return CURRENT.get()


def carry(app: ASGIApp) -> ASGIApp:
    """``app`` called with the caller's :func:`current` access in the scope (:data:`CARRIED`):
    an in-process request runs with the grants of whoever makes it, never more."""

    async def carrying(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, CARRIED: current()}, receive, send)

    return carrying


def parse_keys_file(path: str) -> dict[str, Access]:
    """The keys of an API keys file, validated; :class:`AccessFileError` says what is wrong
    (the file, the entry index and the field; never a key's value)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise AccessFileError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            document: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise AccessFileError(f"the API keys file {path} is not valid {kind}: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise AccessFileError(f"the API keys file {path} needs a non-empty 'keys' array")
    keys: dict[str, Access] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise AccessFileError(f"{where} must be an object")
        unknown = set(entry) - ENTRY_FIELDS
        if unknown:
            raise AccessFileError(f"{where} has unknown fields {sorted(unknown)}")
        key = entry.get("key")
        if not isinstance(key, str) or not key.strip():
            raise AccessFileError(f"{where}: 'key' must be a non-empty string")
        if key in keys:
            raise AccessFileError(f"{where}: the same key appears twice")
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise AccessFileError(f"{where}: 'admin' must be true or false")
        grants: dict[str, tuple[Grant, ...]] = {}
        for kind in ("read", "write"):
            given = entry.get(kind, [])
            if not isinstance(given, list):
                raise AccessFileError(f"{where}: '{kind}' must be an array of grants")
            try:
                grants[kind] = tuple(Grant.parse(g) for g in given)
            except ValueError as exc:
                raise AccessFileError(f"{where}: '{kind}': {exc}") from None
        keys[key] = Access(grants["read"], grants["write"], admin, name=f"keys[{index}]")
    return keys


class KeyRing:
    """Every accepted key and its access: plain keys (full access) and the keys file's.
    :meth:`reload` re-reads the file (on SIGHUP)."""

    def __init__(self, plain: Iterable[str], keys_file: str | None) -> None:
        self.plain = tuple(plain)
        self.keys_file = keys_file
        self._table: list[tuple[bytes, Access]] = []
        self._build(parse_keys_file(keys_file) if keys_file else {})

    def __bool__(self) -> bool:
        return bool(self._table)

    def _build(self, from_file: dict[str, Access]) -> None:
        table = [(k.encode("utf-8"), FULL) for k in self.plain]
        table += [(k.encode("utf-8"), a) for k, a in from_file.items()]
        self._table = table

    def reload(self) -> bool:
        """Re-read the keys file; on error keep the keys in force (and log why). True when
        the new keys took effect."""
        if not self.keys_file:
            return False
        try:
            self._build(parse_keys_file(self.keys_file))
        except AccessFileError as exc:
            log.error("API keys file not reloaded, the previous keys stay in force: %s", exc)
            return False
        log.info("API keys file reloaded: %d keys", len(self._table))
        return True

    def lookup(self, candidate: str | None) -> Access | None:
        """The access of ``candidate``, compared in constant time against every key."""
        if candidate is None:
            return None
        given = candidate.encode("utf-8", "surrogateescape")
        found: Access | None = None
        for key, access in self._table:  # no early exit: the time does not tell which key
            if hmac.compare_digest(given, key):
                found = access
        return found
