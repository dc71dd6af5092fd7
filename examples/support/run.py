"""Run the support -> specialist pair: a control plane and two agent nodes, three
processes on loopback. Submits two tickets for one customer and prints what happened.

    python examples/support/run.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import httpx

from agentfield_asgi.testing import ServerProcess, agent_server

ROOT = Path(__file__).resolve().parents[2]


def node(module: str, control_plane: ServerProcess) -> ServerProcess:
    return agent_server(f"examples.support.{module}:app", control_plane.url, cwd=str(ROOT))


def main() -> int:
    database = Path(tempfile.mkdtemp(prefix="support-example-")) / "memory.db"
    with ServerProcess(["--database-url", f"sqlite:///{database}"]) as control_plane:
        with node("specialist_agent", control_plane), node("support_agent", control_plane):
            client = httpx.Client(base_url=control_plane.url, timeout=60)
            customer = {"X-Session-ID": "customer-42"}
            results = []
            for ticket_id, text in [
                ("T-1", "I was charged twice for my invoice!"),
                ("T-2", "Please refund my last order"),
            ]:
                reply = client.post(
                    "/api/v1/execute/support-agent.handle_ticket",
                    json={"input": {"ticket_id": ticket_id, "text": text}},
                    headers=customer,
                )
                reply.raise_for_status()
                results.append(reply.json())
                print(json.dumps(reply.json(), indent=2))

            first, second = (r["result"] for r in results)
            assert first["specialist"]["saw_priority"] == "high", first
            assert first["specialist"]["saw_category"] == "billing", first
            assert second["specialist"]["saw_priority"] == "normal", second  # its own workflow
            assert second["specialist"]["customer_ticket_count"] == 2, second  # same session
            for r in results:
                workflow = client.get(f"/api/v1/workflows/{r['workflow_id']}").json()
                left = client.get(
                    "/api/v1/memory/list",
                    params={"scope": "workflow"},
                    headers={"X-Workflow-ID": r["workflow_id"]},
                ).json()
                print(
                    f"workflow {r['workflow_id']}: {workflow['status']}, "
                    f"{len(workflow['executions'])} executions, {len(left)} keys left"
                )
                assert workflow["status"] == "succeeded" and left == []
    print("support example: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
