"""A real compiled LangGraph graph and one of our agent nodes share memory: memory
server, agent node and graph each in a process of its own, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agentfield_asgi import MemoryClient
from agentfield_asgi.testing import ServerProcess, agent_server

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


async def test_graph_writes_what_our_agent_reads(database_url: str) -> None:
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
        memory = MemoryClient(control_plane.url)
        try:
            history = await memory.events.history(patterns="users/ana/*")
        finally:
            await memory.aclose()
        assert [(e.key, e.action) for e in history] == [("users/ana/profile", "set")]
