"""``agentfield-asgi bench``: the benchmark command (issue 6)."""
