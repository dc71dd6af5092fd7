"""``agentfield-asgi serve | bench``: argument parsing and uvicorn."""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .settings import Settings

log = logging.getLogger("agentfield_asgi")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentfield-asgi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the memory service (control plane) on uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--database-url",
        default=None,
        help="sqlite:///path (default ./agentfield.db) or postgresql://...; "
        "also AGENTFIELD_DATABASE_URL",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (PostgreSQL only; SQLite needs one)"
    )
    serve.add_argument("--api-key", action="append", default=None, help="require this API key (repeatable)")
    serve.add_argument(
        "--cors-origin", action="append", default=None, help="allow this browser origin (repeatable)"
    )
    serve.add_argument("--vector-metric", choices=["cosine", "dot", "l2"], default=None)
    serve.add_argument(
        "--sqlite-synchronous", choices=["FULL", "NORMAL"], default=None, help="SQLite durability (default FULL)"
    )
    serve.add_argument("--ui-allow-edit", action="store_true", default=None, help="let the inspector edit keys")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    from .bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        database_url=args.database_url,
        api_keys=tuple(args.api_key) if args.api_key else None,
        cors_origins=tuple(args.cors_origin) if args.cors_origin else None,
        vector_metric=args.vector_metric,
        sqlite_synchronous=args.sqlite_synchronous,
        ui_allow_edit=args.ui_allow_edit,
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.factory import export_settings

    settings = settings_from_args(args)
    storage = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    if args.workers > 1 and storage == "sqlite":
        print("error: --workers > 1 needs PostgreSQL (SQLite takes one writer process)", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from .server.auth import RedactKeysFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactKeysFilter())
    if not _is_loopback(args.host) and not settings.api_keys:
        log.warning(
            "WARNING: listening on %s without API keys: anyone who can reach this port can read and "
            "write all memory. Set --api-key or AGENTFIELD_API_KEYS.",
            args.host,
        )
    from .server.app import _redact

    print(
        f"agentfield-asgi listening on http://{args.host}:{args.port} "
        f"(storage: {storage} {_redact(settings.database_url)})",
        flush=True,
    )
    # Workers are separate processes: hand them the settings through the environment.
    export_settings(settings)
    uvicorn.run(
        "agentfield_asgi.server.factory:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        loop="auto",
        http="auto",
        lifespan="on",
        timeout_graceful_shutdown=5,
        log_config=uvicorn_log_config(),
    )
    return 0


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging setup with ``?api_key=`` values redacted (its access log prints URLs)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_keys"] = {
        "()": "agentfield_asgi.server.auth.RedactKeysFilter"
    }
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_keys")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "bench":
        from .bench.cli import run_bench

        return run_bench(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
