"""Run the autonomous recruiter (one process: control plane + agent node), give it a
role and applicants through the memory API, and watch it shortlist on its own.

    python examples/recruiter/run.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from agentfield_asgi import MemoryClient
from agentfield_asgi.testing import agent_server

ROOT = Path(__file__).resolve().parents[2]

ROLE = {
    "title": "Backend engineer",
    "skills": ["python", "postgresql", "asyncio"],
    "min_years": 3,
    "threshold": 60,
}
FIRST = [
    {"id": "c1", "name": "Ada", "skills": ["Python", "asyncio", "PostgreSQL"], "years": 6},
    {"id": "c2", "name": "Brook", "skills": ["java"], "years": 10},
    {"id": "c3", "name": "Chen", "skills": ["python", "postgresql"], "years": 2},
]
LATER = [
    {"id": "c4", "name": "Dara", "skills": ["python", "asyncio"], "years": 4},
    {"id": "c5", "name": "Eli", "skills": ["go"], "years": 1},
]


async def wait_for_round(memory: MemoryClient, role_id: str, rounds: int) -> list:
    """The shortlist once the recruiter has finished ``rounds`` rounds for the role."""
    for _ in range(600):  # up to two minutes
        if await memory.global_scope.get(f"rounds:{role_id}", default=0) >= rounds:
            return await memory.global_scope.get(f"shortlist:{role_id}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the recruiter did not finish round {rounds}")


async def drive(url: str) -> None:
    memory = MemoryClient(url)
    await memory.global_scope.set("role:be-1", ROLE)
    await memory.global_scope.set("applicants:be-1", FIRST)
    await memory.global_scope.set("open_roles", ["be-1"])
    first = await wait_for_round(memory, "be-1", 1)
    print("after round 1:", json.dumps(first, indent=2))
    assert [c["id"] for c in first] == ["c1", "c3"], first  # c2 lacks the skills

    await memory.global_scope.set("applicants:be-1", FIRST + LATER)
    second = await wait_for_round(memory, "be-1", 2)
    print("after round 2:", json.dumps(second, indent=2))
    assert [c["id"] for c in second] == ["c1", "c4", "c3"], second
    seen = await memory.actor("recruiter").get("seen:be-1")
    print("assessed so far:", seen)
    assert seen == ["c1", "c2", "c3", "c4", "c5"]
    assert await memory.global_scope.get("rounds:be-1") == 2  # newcomers only: no re-scoring
    await memory.aclose()


def main() -> int:
    database = Path(tempfile.mkdtemp(prefix="recruiter-example-")) / "memory.db"
    env = {"AGENTFIELD_DATABASE_URL": f"sqlite:///{database}"}
    recruiter = agent_server("examples.recruiter.recruiter:app", env=env, cwd=str(ROOT))
    with recruiter:
        asyncio.run(drive(recruiter.url))
    print("recruiter example: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
