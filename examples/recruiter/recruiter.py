"""An autonomous recruiter: one process hosting the control plane and the agent node.

Nobody calls it. A background loop (started with the node) watches global memory for
open roles and their applicants; for each role with new applicants it runs a hiring
round (a workflow of its own), which calls ``score_candidate`` once per applicant as
child executions that read the role's brief from the round's workflow memory. The
shortlist goes to global memory; which applicants it has already assessed goes to
the recruiter's own actor memory, so later rounds only score newcomers.

``score`` is a deterministic stand-in for an AI scoring call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from agentfield_asgi import Agent

log = logging.getLogger("recruiter")
POLL_SECONDS = float(os.environ.get("RECRUITER_POLL_SECONDS", "0.5"))
SHORTLIST_SIZE = 3

app = Agent("recruiter", serve_control_plane=True)  # AGENTFIELD_DATABASE_URL, AGENTFIELD_PUBLIC_URL


def score(candidate: dict, brief: dict) -> dict:
    """Deterministic stand-in for an LLM judging a candidate against a role."""
    wanted = {s.lower() for s in brief["skills"]}
    has = {s.lower() for s in candidate["skills"]}
    matched = sorted(wanted & has)
    skill_points = 70 * len(matched) / max(len(wanted), 1)
    years_points = 30 * min(candidate["years"] / max(brief["min_years"], 1), 1.0)
    return {
        "score": round(skill_points + years_points),
        "reasons": [
            f"matches {', '.join(matched) or 'no required skills'}",
            f"{candidate['years']} years",
        ],
    }


@app.reasoner
async def score_candidate(candidate: dict) -> dict:
    brief = await app.memory.get("brief")  # written by the hiring round: same workflow
    result = {"id": candidate["id"], "name": candidate["name"], **score(candidate, brief)}
    await app.memory.set(f"score:{candidate['id']}", result)  # scratch: removed with the workflow
    return result


@app.reasoner
async def hiring_round(role_id: str) -> dict:
    brief = await app.memory.global_scope.get(f"role:{role_id}")
    applicants = await app.memory.global_scope.get(f"applicants:{role_id}", default=[])
    seen = set(await app.memory.actor().get(f"seen:{role_id}", default=[]))
    fresh = [a for a in applicants if a["id"] not in seen]
    await app.memory.set("brief", brief)  # unscoped: this round's workflow memory
    scored = [await app.call("recruiter.score_candidate", candidate=c) for c in fresh]

    previous = await app.memory.global_scope.get(f"shortlist:{role_id}", default=[])
    ranked = sorted([*previous, *scored], key=lambda c: (-c["score"], c["id"]))
    shortlist = [c for c in ranked if c["score"] >= brief["threshold"]][:SHORTLIST_SIZE]
    await app.memory.global_scope.set(f"shortlist:{role_id}", shortlist)
    await app.memory.actor().set(f"seen:{role_id}", sorted(seen | {c["id"] for c in fresh}))
    await app.memory.global_scope.set(f"rounds:{role_id}", await _rounds(role_id) + 1)
    return {
        "role": role_id,
        "scored": [c["id"] for c in scored],
        "shortlist": [c["id"] for c in shortlist],
    }


async def _rounds(role_id: str) -> int:
    return int(await app.memory.global_scope.get(f"rounds:{role_id}", default=0))


async def _pending_roles() -> list[str]:
    pending = []
    for role_id in await app.memory.global_scope.get("open_roles", default=[]):
        applicants = await app.memory.global_scope.get(f"applicants:{role_id}", default=[])
        seen = set(await app.memory.actor().get(f"seen:{role_id}", default=[]))
        if any(a["id"] not in seen for a in applicants):
            pending.append(role_id)
    return pending


async def recruit_forever() -> None:
    while True:
        try:
            for role_id in await _pending_roles():
                # No request context here: each round starts a workflow of its own,
                # completed (and its scratch memory removed) when the round returns.
                outcome = await app.call("recruiter.hiring_round", role_id=role_id)
                log.info("round for %s: %s", role_id, outcome)
        except Exception:
            log.exception("recruiting round failed; retrying")
        await asyncio.sleep(POLL_SECONDS)


_loop: list[asyncio.Task[None]] = []


@app.on_start
async def start_recruiting() -> None:
    _loop.append(asyncio.get_running_loop().create_task(recruit_forever()))


@app.on_stop
async def stop_recruiting() -> None:
    for task in _loop:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _loop.clear()
