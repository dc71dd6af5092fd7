"""OpenAPI descriptions of the control plane's node and execution routes (AgentField's
shapes); ``nodes.py`` and ``executions.py`` publish them as their ``OPENAPI_PATHS``."""

from __future__ import annotations

from typing import Any

from .openapi import ANY, SCOPE_HEADERS, _json, _obj, _path_param, _query, _responses

OBJECT = {"type": "object"}
INPUT_BODY = {
    "required": False,
    "content": {"application/json": {"schema": _obj([], input={"type": "object"})}},
}
NODE_ID = _path_param("node_id")
EXECUTION_ID = _path_param("execution_id")
TARGET = _path_param("target")
EMPTY_OK_BODY = {"required": False, "content": {"application/json": {"schema": OBJECT}}}


def _get(summary: str, params: list[dict[str, Any]], *errors: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": _responses({"200": _json(OBJECT)}, *errors),
        }
    }


NODE_PATHS: dict[str, Any] = {
    "/nodes/register": {
        "post": {
            "summary": "register an agent node: AgentField's document (id, base_url, version, "
            "reasoners, skills, instance_id, ...) or ours (node_id, base_url, reasoners)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _obj(
                            [],
                            id={"type": "string"},
                            node_id={"type": "string"},
                            base_url={"type": "string"},
                            version={"type": "string"},
                            instance_id={"type": "string"},
                            reasoners={"type": "array", "items": ANY},
                            skills={"type": "array", "items": ANY},
                            communication_config=OBJECT,
                            metadata=OBJECT,
                        )
                    }
                },
            },
            "responses": _responses({"201": _json(OBJECT, "registered")}, 400, 413),
        }
    },
    "/nodes": _get(
        "registered nodes: {nodes, count}",
        [_query("health_status", {"type": "string", "enum": ["active", "inactive"]})],
    ),
    "/nodes/{node_id}": _get("one registered node", [NODE_ID], 404),
    "/nodes/{node_id}/health": _get("a node's health and lifecycle status", [NODE_ID], 404),
    "/nodes/{node_id}/heartbeat": {
        "post": {
            "summary": "a node's heartbeat (optional body: status, version, instance_id)",
            "parameters": [NODE_ID],
            "requestBody": EMPTY_OK_BODY,
            "responses": _responses({"200": _json(OBJECT)}, 400, 404, 413),
        }
    },
    "/nodes/{node_id}/shutdown": {
        "post": {
            "summary": "a node going away (marked offline)",
            "parameters": [NODE_ID],
            "requestBody": EMPTY_OK_BODY,
            "responses": _responses({"200": _json(OBJECT)}, 400, 404, 413),
        }
    },
    "/discovery/capabilities": _get(
        "reasoners and skills of the registered nodes (JSON format)",
        [
            _query(name, {"type": "string"})
            for name in (
                "agent",
                "agent_ids",
                "reasoner",
                "skill",
                "tags",
                "health_status",
                "format",
            )
        ]
        + [_query(name, {"type": "string", "pattern": "^[0-9]+$"}) for name in ("limit", "offset")],
        400,
    ),
}

EXECUTION_PATHS: dict[str, Any] = {
    "/execute/{target}": {
        "post": {
            "summary": "run <node_id>.<reasoner or skill> with {'input': {...}}, wait for it",
            "parameters": [TARGET, *SCOPE_HEADERS],
            "requestBody": INPUT_BODY,
            "responses": _responses({"200": _json(OBJECT)}, 400, 404, 413, 502, 504),
        }
    },
    "/execute/async/{target}": {
        "post": {
            "summary": "start <node_id>.<reasoner or skill>; answers at once with its ids",
            "parameters": [TARGET, *SCOPE_HEADERS],
            "requestBody": INPUT_BODY,
            "responses": _responses({"202": _json(OBJECT, "accepted")}, 400, 404, 413),
        }
    },
    "/executions/{execution_id}": _get(
        "an execution: status (AgentField's words), result, error, timings", [EXECUTION_ID], 404
    ),
    "/executions/{execution_id}/status": {
        "post": {
            "summary": "a node posts the outcome of an execution it answered 202 for",
            "parameters": [EXECUTION_ID],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _obj(
                            ["status"],
                            status={"type": "string"},
                            result=ANY,
                            error={"type": "string"},
                            error_details=OBJECT,
                            duration_ms={"type": "integer"},
                        )
                    }
                },
            },
            "responses": _responses({"200": _json(OBJECT)}, 400, 404, 409, 413),
        }
    },
}
