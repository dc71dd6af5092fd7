"""What metrics and tracing cost: get and set throughput with both on and both off, side
by side (``agentfield-asgi bench``, the ``observability`` section).

Two SQLite servers: ``plain_app`` (``observability = False``: no metrics middleware, no
spans) and ``observed_app`` (``/metrics`` on, and the OpenTelemetry SDK recording every
span through a batch processor to an exporter that drops them, so the cost measured is
ours and the SDK's, not a collector's). Each client task calls them in turn, call by call,
so the machine's drift hits both alike.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..testing import ServerProcess
from .client import BenchClient
from .measure import closed_loop_paired, summarize

CONCURRENCY = 8
ROUNDS = 3
MODULE = "agentfield_asgi.bench.observability"


def _observed() -> Any:
    from ..server.app import create_memory_app
    from ..settings import Settings

    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        pass  # measured without spans; the report says whether tracing was on
    else:

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
    return create_memory_app(settings=Settings.from_env()).app


def __getattr__(name: str) -> Any:
    """``plain_app`` / ``observed_app``, built when uvicorn imports them (in its process)."""
    if name == "observed_app":
        return _observed()
    if name == "plain_app":
        from ..server.app import create_memory_app
        from ..settings import Settings

        return create_memory_app(settings=Settings.from_env(observability=False)).app
    raise AttributeError(name)


async def observability_cost(tmp: str, total: int) -> dict[str, Any]:
    """Throughput (and p50) of get and set with metrics and tracing off and on, and on/off."""
    from .. import tracing
    from ..server import metrics

    out: dict[str, Any] = {
        "metrics": metrics.prometheus_client is not None,
        "tracing": tracing.enabled(),
        "concurrency": CONCURRENCY,
    }
    with contextlib.ExitStack() as stack:
        clients = {}
        for name, app in (("off", "plain_app"), ("on", "observed_app")):
            env = {"AGENTFIELD_DATABASE_URL": f"sqlite:///{tmp}/observability-{name}.db"}
            server = stack.enter_context(ServerProcess(app=f"{MODULE}:{app}", env=env))
            clients[name] = BenchClient(server.url)
        try:
            for client in clients.values():
                await client.set("hot", {"n": 0}, scope="global")
            ops = {
                "get": lambda c: lambda i: c.get("hot", scope="global"),
                "set": lambda c: lambda i: c.set(f"obs-{i}", {"n": i}, scope="global"),
            }
            for op, make in ops.items():
                raw: dict[str, tuple[list[int], float, int]] = {n: ([], 0.0, 0) for n in clients}
                for r in range(ROUNDS):
                    measured = await closed_loop_paired(
                        {n: make(c) for n, c in clients.items()},
                        concurrency=CONCURRENCY,
                        total=max(20, total // ROUNDS),
                        first=(r + 1) * 1_000_000,
                    )
                    for n, (lat, elapsed, errors) in measured.items():
                        acc = raw[n]
                        raw[n] = (acc[0] + lat, acc[1] + elapsed, acc[2] + errors)
                stats = {n: summarize(*v).as_dict() for n, v in raw.items()}
                off, on = stats["off"]["ops_per_s"], stats["on"]["ops_per_s"]
                out[f"{op}_c{CONCURRENCY}"] = {
                    **stats,
                    "on_over_off": round(on / off, 3) if off else None,
                }
        finally:
            for client in clients.values():
                await client.__aexit__()
    return out
