"""Agent-node registry in AgentField's shapes.

* ``POST /nodes/register``: the public SDK's registration document (``id``, ``base_url``,
  ``version``, ``reasoners`` / ``skills`` with ids and schemas, ``instance_id``,
  ``communication_config``, ``metadata``...) or ours (``node_id``, ``base_url``,
  ``reasoners`` as names). Re-registering an id replaces the entry (a restarted node).
* ``POST /nodes/{id}/heartbeat``, ``GET /nodes/{id}/health``, ``POST /nodes/{id}/shutdown``,
  ``GET /nodes``, ``GET /nodes/{id}``, ``GET /discovery/capabilities``.

Health is computed when read, from the stored time of the last heartbeat, so every
control-plane instance on one database agrees without a background sweeper. A node that
has never heartbeated (ours do not) stays ``active``; one that heartbeats is ``inactive``
once its last heartbeat is older than ``Settings.node_inactive_after_seconds``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..codec import format_ts, now_us
from ..errors import INVALID_PARAMETER, BadRequest, NodeNotFound
from . import access
from .http import json_response, read_json_object
from .openapi_control import NODE_PATHS

if TYPE_CHECKING:
    from .app import MemoryService

MAX_ID_LENGTH = 256
COMPONENT_FIELDS = ("id", "description", "tags", "input_schema", "output_schema", "examples")
DOCUMENT_FIELDS = ("version", "team_id", "instance_id", "communication_config", "metadata")
LIFECYCLE_WORDS = ("starting", "ready", "degraded", "offline")


def identifier(value: Any, field: str) -> str:
    """``value`` as a non-empty id of at most ``MAX_ID_LENGTH`` characters (400 otherwise)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        raise BadRequest(
            f"'{field}' must be a non-empty string of at most {MAX_ID_LENGTH} characters",
            code=INVALID_PARAMETER,
            details={"field": field},
        )
    return value


def _components(value: Any, field: str) -> list[dict[str, Any]]:
    """Reasoners or skills as ``[{"id", ...schemas}]``, from names or AgentField objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"'{field}' must be a list", code=INVALID_PARAMETER)
    out: dict[str, dict[str, Any]] = {}
    for item in value:
        entry = item if isinstance(item, dict) else {"id": item}
        name = identifier(entry.get("id"), field)
        out[name] = {k: entry[k] for k in COMPONENT_FIELDS if entry.get(k) is not None}
    return [out[name] for name in sorted(out)]


def registration(payload: dict[str, Any]) -> dict[str, Any]:
    """The stored node for a registration document (either dialect)."""
    node_id = identifier(payload.get("id") or payload.get("node_id"), "id")
    base_url = payload.get("base_url")
    if base_url is not None and (
        not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
    ):
        raise BadRequest("'base_url' must be an http(s) URL", code=INVALID_PARAMETER)
    for field in ("communication_config", "metadata"):
        if payload.get(field) is not None and not isinstance(payload[field], dict):
            raise BadRequest(f"'{field}' must be an object", code=INVALID_PARAMETER)
    now = now_us()
    node: dict[str, Any] = {
        "id": node_id,
        "node_id": node_id,
        "base_url": base_url.rstrip("/") if base_url else None,
        "reasoners": _components(payload.get("reasoners"), "reasoners"),
        "skills": _components(payload.get("skills"), "skills"),
        "lifecycle_status": _lifecycle(payload.get("lifecycle_status")),
        "registered_at": format_ts(now),
        "last_heartbeat": format_ts(now),
        "_heartbeat_us": now,
        # Nodes that announce a heartbeat interval (AgentField's do) are expected to keep it.
        "_heartbeats": bool((payload.get("communication_config") or {}).get("heartbeat_interval")),
    }
    for field in DOCUMENT_FIELDS:
        if payload.get(field) is not None:
            node[field] = payload[field]
    return node


def view(node: dict[str, Any], inactive_after: float, now: int | None = None) -> dict[str, Any]:
    """The node as answered: internal fields dropped, ``health_status`` computed."""
    out = {k: v for k, v in node.items() if not k.startswith("_")}
    age = ((now or now_us()) - int(node.get("_heartbeat_us", 0))) / 1_000_000
    stale = node.get("_heartbeats") and age > inactive_after
    offline = node.get("lifecycle_status") == "offline"
    out["health_status"] = "inactive" if stale or offline else "active"
    return out


def _lifecycle(word: Any) -> str:
    return word if word in LIFECYCLE_WORDS else "ready"


def component_names(node: dict[str, Any], kind: str) -> list[str]:
    return [c["id"] if isinstance(c, dict) else str(c) for c in node.get(kind) or []]


class NodeRegistry:
    """Registered nodes, kept in the store (shared by every instance on one database)."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service

    @property
    def inactive_after(self) -> float:
        return self.service.settings.node_inactive_after_seconds

    async def register(self, payload: dict[str, Any]) -> dict[str, Any]:
        node = registration(payload)
        store = await self.service.ready()
        await store.put_node(node["id"], node)
        return view(node, self.inactive_after)

    async def stored(self, node_id: str) -> dict[str, Any]:
        """The stored node (internal fields included); 404 ``node_not_found`` when absent."""
        store = await self.service.ready()
        for node in await store.get_nodes():
            if node.get("node_id") == node_id or node.get("id") == node_id:
                return node
        raise NodeNotFound(f"no agent node {node_id!r} is registered", details={"node_id": node_id})

    async def all(self) -> list[dict[str, Any]]:
        store = await self.service.ready()
        now = now_us()
        return [view(n, self.inactive_after, now) for n in await store.get_nodes()]

    async def heartbeat(self, node_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        node = await self.stored(node_id)
        now = now_us()
        node.update(_heartbeat_us=now, _heartbeats=True, last_heartbeat=format_ts(now))
        node["lifecycle_status"] = _lifecycle(payload.get("status"))
        for field in ("version", "instance_id"):
            if isinstance(payload.get(field), str) and payload[field]:
                node[field] = payload[field]
        store = await self.service.ready()
        await store.put_node(node["id"], node)
        return {"success": True, "message": "heartbeat received", "timestamp": format_ts(now)}

    async def shutdown(self, node_id: str) -> dict[str, Any]:
        node = await self.stored(node_id)
        node["lifecycle_status"] = "offline"
        store = await self.service.ready()
        await store.put_node(node["id"], node)
        return {
            "success": True,
            "message": "node shutdown acknowledged",
            "node_id": node["id"],
            "lifecycle_status": "offline",
            "health_status": "inactive",
        }

    async def health(self, node_id: str) -> dict[str, Any]:
        node = view(await self.stored(node_id), self.inactive_after)
        return {
            "node_id": node["id"],
            "health_status": node["health_status"],
            "lifecycle_status": node["lifecycle_status"],
            "last_heartbeat": node["last_heartbeat"],
            "instance_id": node.get("instance_id", ""),
        }

    async def capabilities(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /discovery/capabilities`` (JSON format) with its agent/reasoner/skill/tag
        filters."""
        wanted = {
            *(v for v in (query.get("agent"), query.get("node_id")) if v),
            *(v for v in (query.get("agent_ids") or "").split(",") if v),
        }
        tags = {t for t in (query.get("tags") or "").split(",") if t}
        health = query.get("health_status")
        agents = []
        for node in await self.all():
            if (wanted and node["id"] not in wanted) or (
                health and node["health_status"] != health
            ):
                continue
            reasoner, skill = query.get("reasoner"), query.get("skill")
            # asking for a reasoner (or a skill) by name leaves the other kind out
            reasoners = (
                [] if skill and not reasoner else _matching(node, "reasoners", reasoner, tags)
            )
            skills = [] if reasoner and not skill else _matching(node, "skills", skill, tags)
            if (query.get("reasoner") or query.get("skill") or tags) and not (reasoners or skills):
                continue
            agents.append(
                {
                    "agent_id": node["id"],
                    "base_url": node.get("base_url") or "",
                    "version": node.get("version", ""),
                    "health_status": node["health_status"],
                    "deployment_type": "long_running",
                    "last_heartbeat": node["last_heartbeat"],
                    "reasoners": reasoners,
                    "skills": skills,
                }
            )
        offset = _int(query.get("offset"), 0)
        limit = _int(query.get("limit"), 100)
        page = agents[offset : offset + limit]
        return {
            "discovered_at": format_ts(now_us()),
            "total_agents": len(page),
            "total_reasoners": sum(len(a["reasoners"]) for a in page),
            "total_skills": sum(len(a["skills"]) for a in page),
            "pagination": {
                "limit": limit,
                "offset": offset,
                "has_more": offset + limit < len(agents),
            },
            "capabilities": page,
        }


def _matching(node: dict[str, Any], kind: str, name: str | None, tags: set[str]) -> list[Any]:
    out = []
    for component in node.get(kind) or []:
        if name and component["id"] != name:
            continue
        if tags and not tags & set(component.get("tags") or []):
            continue
        out.append({**component, "invocation_target": f"{node['id']}.{component['id']}"})
    return out


def _int(raw: str | None, default: int) -> int:
    try:
        return max(0, int(raw)) if raw else default
    except ValueError:
        raise BadRequest(f"not an integer: {raw!r}", code=INVALID_PARAMETER) from None


OPENAPI_PATHS = NODE_PATHS


def routes(service: MemoryService) -> list[Route]:
    registry = NodeRegistry(service)
    settings = service.settings

    async def register(request: Request) -> Response:
        access.current().require_admin("registering a node")
        node = await registry.register(await read_json_object(request, settings))
        body = {
            "success": True,
            "message": "Node registered successfully",
            "node_id": node["id"],
            "resolved_base_url": node["base_url"],
            "node": node,
        }
        return json_response(body, 201)

    async def list_nodes(request: Request) -> Response:
        nodes = await registry.all()
        health = request.query_params.get("health_status")
        if health:
            nodes = [n for n in nodes if n["health_status"] == health]
        return json_response({"nodes": nodes, "count": len(nodes)})

    async def get_node(request: Request) -> Response:
        node = await registry.stored(request.path_params["node_id"])
        return json_response(view(node, registry.inactive_after))

    async def heartbeat(request: Request) -> Response:
        access.current().require_admin("a node's heartbeat")
        payload = await read_json_object(request, settings, empty_ok=True)
        return json_response(await registry.heartbeat(request.path_params["node_id"], payload))

    async def health(request: Request) -> Response:
        return json_response(await registry.health(request.path_params["node_id"]))

    async def shutdown(request: Request) -> Response:
        access.current().require_admin("shutting a node down")
        await read_json_object(request, settings, empty_ok=True)
        return json_response(await registry.shutdown(request.path_params["node_id"]))

    async def capabilities(request: Request) -> Response:
        fmt = request.query_params.get("format", "json").lower()
        if fmt != "json":
            raise BadRequest(
                f"discovery is served as JSON only (format=json), not {fmt!r}",
                code=INVALID_PARAMETER,
                details={"field": "format", "allowed": ["json"]},
            )
        return json_response(await registry.capabilities(dict(request.query_params)))

    return [
        Route("/nodes/register", register, methods=["POST"]),
        Route("/nodes", list_nodes, methods=["GET"]),
        Route("/nodes/{node_id}", get_node, methods=["GET"]),
        Route("/nodes/{node_id}/heartbeat", heartbeat, methods=["POST"]),
        Route("/nodes/{node_id}/health", health, methods=["GET"]),
        Route("/nodes/{node_id}/shutdown", shutdown, methods=["POST"]),
        Route("/discovery/capabilities", capabilities, methods=["GET"]),
    ]
