"""``ListNamespacesOp``: namespaces from key names (the server sends keys, not values).

The key prefix sent to the server is the longest wildcard-free start of the
prefix conditions, so only the part of the scope that can match is read. Conditions
(prefix / suffix, ``*`` matching any one label), ``max_depth``, sorting and
``offset``/``limit`` then apply as in LangGraph's ``InMemoryStore``.
"""

from __future__ import annotations

from langgraph.store.base import ListNamespacesOp, MatchCondition

from . import namespaces as ns
from .client import ScopeCalls


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    if not path:
        return True
    if condition.match_type not in ("prefix", "suffix"):
        raise ValueError(f"unsupported match type: {condition.match_type!r}")
    return all(p == "*" or p == label for p, label in zip(path, part, strict=True))


def _fixed_start(op: ListNamespacesOp) -> tuple[str, ...]:
    for condition in op.match_conditions or ():
        if condition.match_type == "prefix":
            start: list[str] = []
            for label in condition.path:
                if label == "*":
                    break
                start.append(label)
            return tuple(start)
    return ()


async def list_namespaces(calls: ScopeCalls, op: ListNamespacesOp) -> list[tuple[str, ...]]:
    found = {ns.namespace_of(key) for key in await calls.keys(ns.prefix_of(_fixed_start(op)))}
    namespaces = [
        n for n in found if n is not None and all(_matches(c, n) for c in op.match_conditions or ())
    ]
    if op.max_depth is not None:
        namespaces = list({n[: op.max_depth] for n in namespaces})
    namespaces.sort()
    return namespaces[op.offset : op.offset + op.limit]
