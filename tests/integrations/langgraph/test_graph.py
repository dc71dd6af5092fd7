"""A real compiled LangGraph graph and one of our agent nodes share memory: memory
server, agent node and graph each in a process of its own, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from agentfield_asgi.testing import ServerProcess, agent_server

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


def test_graph_writes_what_our_agent_reads(database_url: str) -> None:
    with ServerProcess(["--database-url", database_url]) as control_plane:
        node = agent_server(
            "tests.integrations.langgraph.profile_agent:app", control_plane.url, cwd=str(ROOT)
        )
        with node:
            run = subprocess.run(
                [sys.executable, str(HERE / "graph_writer.py"), control_plane.url, "ana"],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=str(ROOT),
            )
            assert run.returncode == 0, run.stderr
            final = json.loads(run.stdout.strip().splitlines()[-1])
        assert final["agent_saw"] == {"likes": "short answers"}
        history = httpx.get(
            f"{control_plane.url}/api/v1/memory/events/history", params={"patterns": "users/ana/*"}
        ).json()
        assert [(e["key"], e["action"], e["metadata"]["agent_id"]) for e in history] == [
            ("users/ana/profile", "set", "langgraph")
        ]
