"""LangGraph namespaces and keys onto our keys: one stated, reversible mapping.

An item ``(namespace, key)`` lives in one scope id (the store's ``scope`` /
``scope_id``) under the memory key::

    <label 1>/<label 2>/.../<label n>/<key>

each part escaped so that ``%`` becomes ``%25`` and ``/`` becomes ``%2F`` (nothing
else changes). The last ``/`` therefore always separates the namespace from the
key, and a namespace prefix ``(a, b)`` is exactly the key prefix ``a/b/``.
Labels must be non-empty strings without ``.`` or NUL (LangGraph's own rule),
and a put needs at least one label; anything else is refused with LangGraph's
``InvalidNamespaceError`` before a request is sent.
"""

from __future__ import annotations

import re

from langgraph.store.base import InvalidNamespaceError

SEPARATOR = "/"
_ESCAPED = re.compile("%(25|2F)")


def escape(part: str) -> str:
    """One label or key as it appears in a memory key."""
    return part.replace("%", "%25").replace("/", "%2F")


def unescape(part: str) -> str:
    return _ESCAPED.sub(lambda m: "%" if m.group(1) == "25" else "/", part)


def check_labels(namespace: tuple[str, ...]) -> None:
    """Refuse labels that LangGraph forbids (empty, ``.``, NUL, not a string)."""
    for label in namespace:
        if not isinstance(label, str) or not label or "." in label or "\x00" in label:
            raise InvalidNamespaceError(
                f"invalid namespace label {label!r} in {namespace!r}: labels are non-empty "
                "strings without '.' or NUL"
            )


def check_namespace(namespace: tuple[str, ...]) -> None:
    """A namespace an item can live in: at least one valid label."""
    if not namespace:
        raise InvalidNamespaceError("namespace cannot be empty")
    check_labels(namespace)


def prefix_of(namespace: tuple[str, ...]) -> str:
    """The key prefix of every item whose namespace starts with ``namespace``."""
    return "".join(escape(label) + SEPARATOR for label in namespace)


def to_key(namespace: tuple[str, ...], key: str) -> str:
    """The memory key of an item."""
    check_namespace(namespace)
    if "\x00" in key:
        raise ValueError("item keys cannot contain NUL")
    return prefix_of(namespace) + escape(key)


def from_key(memory_key: str) -> tuple[tuple[str, ...], str] | None:
    """``(namespace, key)`` of a memory key, or None when it is not an item's key."""
    parts = memory_key.split(SEPARATOR)
    if len(parts) < 2 or not all(parts[:-1]):
        return None
    return tuple(unescape(p) for p in parts[:-1]), unescape(parts[-1])


def namespace_of(memory_key: str) -> tuple[str, ...] | None:
    parsed = from_key(memory_key)
    return None if parsed is None else parsed[0]
