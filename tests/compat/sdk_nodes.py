"""Public-SDK agent nodes as separate processes on loopback, and waiting for them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from agentfield_asgi.testing import ServerProcess
from agentfield_asgi.testing.servers import free_port

NODES = Path(__file__).resolve().parent / "nodes"
ROOT = Path(__file__).resolve().parents[2]


class SDKNode(ServerProcess):
    """``python tests/compat/nodes/<script>.py``: an ``agentfield.Agent`` serving itself."""

    def __init__(
        self,
        script: str,
        control_plane_url: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        port = port or free_port()
        env = {"PORT": str(port), "AGENTFIELD_SERVER": control_plane_url, **(env or {})}
        super().__init__(port=port, env=env, ready_path="/health", cwd=str(ROOT))
        self.script = str(NODES / f"{script}.py")

    def command(self) -> list[str]:
        return [sys.executable, self.script]


def wait_registered(
    control_plane_url: str, *node_ids: str, timeout: float = 60.0, api_key: str | None = None
) -> None:
    """Until every node in ``node_ids`` is registered and active."""
    deadline = time.monotonic() + timeout
    headers = {"X-API-Key": api_key} if api_key else {}
    while time.monotonic() < deadline:
        reply = httpx.get(f"{control_plane_url}/api/v1/nodes", timeout=5, headers=headers)
        active = {n["id"] for n in reply.json()["nodes"] if n["health_status"] == "active"}
        if set(node_ids) <= active:
            return
        time.sleep(0.1)
    raise AssertionError(f"nodes {node_ids} did not register: {reply.json()}")


__all__ = ["SDKNode", "wait_registered"]
