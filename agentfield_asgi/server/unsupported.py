"""AgentField control-plane features this service leaves out, answered with a clear 501.

A request for one of them would otherwise be a plain 404 (or 405 where one of our routes
shares the path): an AgentField node or tool then cannot tell "not here" from "wrong
URL". The app's 404/405 handler asks :func:`unsupported_feature` first.
"""

from __future__ import annotations

import re

from ..errors import NotImplementedFeature

_ID = r"[^/]+"
# (path pattern, the feature as a user knows it); first match wins. Searched in the full
# request path, so a service mounted under a prefix in a host app answers the same.
FEATURES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), feature)
    for pattern, feature in (
        (
            r"/api/v1/(did|vc|identity|registered-dids|revocations|execution/vc)(/|$)",
            "DIDs and verifiable credentials",
        ),
        (rf"/api/v1/agents/{_ID}/executions/{_ID}/", "approvals (human in the loop)"),
        (r"/api/v1/approvals?(/|$)", "approvals (human in the loop)"),
        (r"/api/ui(/|$)", "the AgentField web UI"),
        (r"^/ui/", "the AgentField web UI"),
        (r"/api/v1/workflow/executions(/events)?$", "workflow DAG events (the AgentField UI)"),
        (r"/api/v1/executions/note$", "execution notes"),
        (rf"/api/v1/executions/{_ID}/(notes|logs)$", "execution notes and logs"),
        (rf"/api/v1/executions/{_ID}/(restart|cancel|pause|resume)$", "execution control"),
        (r"/api/v1/executions/batch-status$", "batch execution status"),
        (r"/api/v1/nodes/register-serverless$", "serverless agents"),
        (
            rf"/api/v1/nodes/({_ID}/(status|start|stop|lifecycle|actions)|status)(/|$)",
            "node lifecycle management",
        ),
        (r"/api/v1/actions(/|$)", "node lifecycle management"),
        (r"/api/v1/(reasoners|skills)/", "direct reasoner routes (use /execute/{node}.{name})"),
        (r"/api/v1/(webhooks|triggers|connectors)(/|$)", "webhooks and triggers"),
        (r"/api/v1/(admin|teams|tags|permissions|policies)(/|$)", "administration"),
    )
)


def unsupported_feature(path: str) -> NotImplementedFeature | None:
    """The 501 for an AgentField feature at ``path``, or None when ``path`` is not one."""
    for pattern, feature in FEATURES:
        if pattern.search(path):
            return NotImplementedFeature(
                f"{feature} is an AgentField control-plane feature agentfield-asgi does "
                "not provide (see docs/compatibility.md)",
                details={"feature": feature, "path": path},
            )
    return None


__all__ = ["FEATURES", "unsupported_feature"]
