"""The public ``agentfield`` SDK's memory client, unchanged, against a live server.

What this proves is what docs/compatibility.md states; keep the two in step.
"""

from __future__ import annotations

import pytest

from .sdk import ACTOR, RUN, SDK, SESSION, MemoryAccessError


async def test_unscoped_set_get_lands_in_the_workflow_of_the_run(sdk: SDK) -> None:
    await sdk.app_memory.set("ticket", {"priority": "high", "tags": ["vip"]})
    assert await sdk.app_memory.get("ticket") == {"priority": "high", "tags": ["vip"]}
    # The SDK always sends X-Workflow-ID (the run id), so unscoped writes go to the workflow.
    stored = await sdk.raw_get("ticket", "workflow", **{"X-Workflow-ID": RUN})
    assert stored.status_code == 200
    assert stored.json()["scope_id"] == RUN and stored.json()["data"] == {
        "priority": "high",
        "tags": ["vip"],
    }


async def test_missing_keys_default_and_exists(sdk: SDK) -> None:
    assert await sdk.app_memory.get("nope") is None
    assert await sdk.app_memory.get("nope", default={"d": 1}) == {"d": 1}
    assert await sdk.app_memory.exists("nope") is False
    await sdk.app_memory.set("zero", 0)
    await sdk.app_memory.set("nothing", None)
    assert await sdk.app_memory.exists("zero") is True
    assert await sdk.app_memory.exists("nothing") is True  # a stored null is a hit
    assert await sdk.app_memory.get("nothing", default="d") is None


async def test_hierarchical_read_prefers_the_narrowest_scope(sdk: SDK) -> None:
    await sdk.app_memory.global_scope.set("tone", "neutral")
    assert await sdk.app_memory.get("tone") == "neutral"
    await sdk.app_memory.actor(ACTOR).set("tone", "concise")
    assert await sdk.app_memory.get("tone") == "concise"
    await sdk.app_memory.session(SESSION).set("tone", "friendly")
    assert await sdk.app_memory.get("tone") == "friendly"
    await sdk.app_memory.set("tone", "urgent")  # the run's workflow
    assert await sdk.app_memory.get("tone") == "urgent"
    await sdk.app_memory.delete("tone")
    assert await sdk.app_memory.get("tone") == "friendly"
    assert await sdk.app_memory.global_scope.get("tone") == "neutral"


async def test_scoped_clients_set_get_list_delete(sdk: SDK) -> None:
    session = sdk.app_memory.session("user_456")
    await session.set("cart", {"items": 2})
    await session.set("coupon", "SAVE10")
    assert await session.get("cart") == {"items": 2}
    assert sorted(await session.list_keys()) == ["cart", "coupon"]
    # another session id does not see it, nor does a hierarchical read from our context
    assert await sdk.app_memory.session(SESSION).get("cart") is None
    assert await sdk.app_memory.get("cart") is None
    stored = await sdk.raw_get("cart", "session", **{"X-Session-ID": "user_456"})
    assert stored.json()["data"] == {"items": 2}
    await session.delete("cart")
    assert await session.exists("cart") is False
    assert await session.list_keys() == ["coupon"]

    workflow = sdk.app_memory.workflow("wf-other")
    await workflow.set("step1", {"ok": True})
    assert await workflow.list_keys() == ["step1"]
    assert await sdk.app_memory.global_scope.list_keys() == []
    await sdk.app_memory.global_scope.set("config", {"temperature": 0.2})
    assert await sdk.app_memory.global_scope.list_keys() == ["config"]
    assert await sdk.memory.list_keys("global") == ["config"]


async def test_json_text_values_come_back_decoded(sdk: SDK) -> None:
    # The SDK json.loads any string it reads: the same against AgentField and against us.
    await sdk.app_memory.set("raw", '{"a": 1}')
    assert await sdk.app_memory.get("raw") == {"a": 1}
    stored = await sdk.raw_get("raw", "workflow", **{"X-Workflow-ID": RUN})
    assert stored.json()["data"] == '{"a": 1}'  # stored as the string it was given


async def test_rejected_input_raises_memory_access_error(sdk: SDK) -> None:
    with pytest.raises(MemoryAccessError):
        await sdk.app_memory.set("", 1)
    with pytest.raises(MemoryAccessError):
        await sdk.memory.set("k", 1, scope="planet")
    with pytest.raises(MemoryAccessError):
        await sdk.app_memory.set("big", "x" * (1024 * 1024 + 1))
    assert await sdk.memory.list_keys("workflow") == []
