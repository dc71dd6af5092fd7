"""The route table: how each route of the service is served.

A route module's ``routes(service)`` returns Starlette routes, or :class:`Served` for a
route that is public (no API key), served at the root rather than under ``/api/v1``, or
on the fast path (a POST endpoint the entry point calls straight, past Starlette's
routing). :func:`build` sorts them into a :class:`RouteTable`; the service serves it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

if TYPE_CHECKING:
    from .app import MemoryService

API_PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class Served:
    """A route with how it is served (a plain route: under ``/api/v1``, behind the API key)."""

    route: Route
    public: bool = False
    """Served without an API key."""
    at_root: bool = False
    """Served at its own path, not under ``/api/v1``."""
    fast: bool = False
    """A POST endpoint the entry point calls straight (the hot memory routes)."""


RouteList = Sequence[BaseRoute | Served]


@dataclass(slots=True)
class RouteTable:
    """Every route of a service, sorted by how it is served."""

    api: list[BaseRoute] = field(default_factory=list)
    """Under ``/api/v1`` (what ``/api/v1/openapi.json`` describes)."""
    root: list[BaseRoute] = field(default_factory=list)
    public_paths: list[str] = field(default_factory=list)
    fast: dict[str, ASGIApp] = field(default_factory=dict)
    """Full path -> the ASGI endpoint of a fast POST route."""
    openapi_paths: dict[str, Any] = field(default_factory=dict)
    """OpenAPI path items the route modules describe themselves (``OPENAPI_PATHS``)."""

    def add(self, entry: BaseRoute | Served) -> None:
        if not isinstance(entry, Served):
            self.api.append(entry)
            return
        served = entry
        (self.root if served.at_root else self.api).append(served.route)
        path = served.route.path if served.at_root else API_PREFIX + served.route.path
        if served.public:
            self.public_paths.append(path)
        if served.fast:
            self.fast[path] = served.route.endpoint


def build(
    service: MemoryService,
    modules: Iterable[ModuleType],
    extra: Iterable[BaseRoute | Served] = (),
) -> RouteTable:
    """The table of ``extra`` and every route of ``modules`` (each has ``routes(service)``
    and may have ``OPENAPI_PATHS``)."""
    table = RouteTable()
    for entry in extra:
        table.add(entry)
    for module in modules:
        make: Callable[[MemoryService], RouteList] = module.routes
        for entry in make(service):
            table.add(entry)
        described: Mapping[str, Any] = getattr(module, "OPENAPI_PATHS", {})
        table.openapi_paths.update(described)
    return table


__all__ = ["API_PREFIX", "RouteTable", "Served", "build"]
