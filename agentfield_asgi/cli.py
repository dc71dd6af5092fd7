"""``agentfield-asgi serve | bench``: argument parsing and uvicorn."""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from . import __version__
from .preflight import PreflightError, bind_listener, check_postgres_reachable, quiet_libraries
from .settings import Settings

log = logging.getLogger("agentfield_asgi")

DESCRIPTION = (
    "Shared, scoped, persistent memory for multi-agent systems, speaking AgentField's "
    "memory API. Start the service with 'agentfield-asgi serve' (SQLite in ./agentfield.db "
    "by default), then point agents at http://127.0.0.1:8080."
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, settings: Settings) -> str | None:
    """The warning ``serve`` prints for a non-loopback host without API keys (else None)."""
    if _is_loopback(host) or settings.api_keys:
        return None
    return (
        f"listening on {host} without API keys: anyone who can reach this port can read and "
        "write all memory. Set --api-key or AGENTFIELD_API_KEYS."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentfield-asgi", description=DESCRIPTION)
    parser.add_argument(
        "-V", "--version", action="version", version=f"agentfield-asgi {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the memory service (control plane) on uvicorn")
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=bounded_int(0, 65535, "a port from 1 to 65535 (0: any free port)"),
        default=8080,
        help="port, 1-65535 (default 8080; 0: any free port, announced at start)",
    )
    serve.add_argument(
        "--database-url",
        default=None,
        help="sqlite:///path (default ./agentfield.db) or postgresql://...; "
        "also AGENTFIELD_DATABASE_URL",
    )
    serve.add_argument(
        "--workers",
        type=bounded_int(1, 512),
        default=1,
        help="worker processes (PostgreSQL only; SQLite needs one)",
    )
    serve.add_argument(
        "--api-key", action="append", default=None, help="require this API key (repeatable)"
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        help="allow this browser origin (repeatable)",
    )
    serve.add_argument("--vector-metric", choices=["cosine", "dot", "l2"], default=None)
    serve.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "EXTRA", "NORMAL"],
        default=None,
        help="SQLite durability (default FULL)",
    )
    serve.add_argument(
        "--sqlite-writer",
        choices=["process", "thread"],
        default=None,
        help="where SQLite writes are made (default: a writer process of their own)",
    )
    serve.add_argument(
        "--ui-allow-edit", action="store_true", default=None, help="let the inspector edit keys"
    )
    serve.add_argument(
        "--mcp",
        action="store_true",
        default=None,
        help="also serve the Model Context Protocol at /mcp (needs the [mcp] extra)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs)"
    )

    from .bench.cli import add_bench_parser

    add_bench_parser(sub)
    _add_mcp_parser(sub)
    return parser


def bounded_int(low: int, high: int, what: str | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``, else a clear message
    (``what`` the value must be, when the plain range would mislead)."""
    what = what or f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {what}, not {value}")
        return value

    parse.__name__ = "integer"  # what argparse names in its own messages
    return parse


def _add_mcp_parser(sub: Any) -> None:
    try:
        from .integrations.mcp.stdio import add_mcp_parser
    except ImportError:  # without the [mcp] extra the command says what to install
        sub.add_parser("mcp", help="run the memory MCP server on stdio (needs the [mcp] extra)")
        return
    add_mcp_parser(sub)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from ``AGENTFIELD_*`` variables, overridden by the flags given."""
    return Settings.from_env(
        database_url=args.database_url,
        api_keys=tuple(args.api_key) if args.api_key else None,
        cors_origins=tuple(args.cors_origin) if args.cors_origin else None,
        vector_metric=args.vector_metric,
        sqlite_synchronous=args.sqlite_synchronous,
        sqlite_writer=args.sqlite_writer,
        ui_allow_edit=args.ui_allow_edit,
        mcp=args.mcp,
    )


APP_FACTORY = "agentfield_asgi.server.factory:app_from_env"
STARTUP_FAILURE = 3  # as uvicorn exits when the application cannot start


def serve(args: argparse.Namespace) -> int:
    """Run the service until SIGINT/SIGTERM; 0 after a clean shutdown."""
    from .server.app import redact_url
    from .server.factory import export_settings
    from .store import open_store

    try:
        settings = settings_from_args(args)
        storage = open_store(settings).kind  # validates the URL; opens nothing
    except (TypeError, ValueError) as exc:
        return _fail(f"invalid settings: {exc}")
    if args.workers > 1 and storage == "sqlite":
        return _fail(
            f"--workers {args.workers} needs PostgreSQL storage: SQLite is served by one "
            "process (its single writer). Use --workers 1 or a postgresql:// database URL."
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries(args.log_level)
    from .server.auth import RedactKeysFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactKeysFilter())
    warning = exposure_warning(args.host, settings)
    if warning:
        log.warning("%s", warning)
    where = redact_url(settings.database_url)
    # Fail on a taken port or an unreachable database before storage is opened or the
    # service says it started: one line each, the traceback only at debug level.
    listener: socket.socket | None = None
    try:
        listener = bind_listener(args.host, args.port)
        if storage == "postgresql":
            check_postgres_reachable(settings.database_url)
    except PreflightError as exc:
        log.debug("cannot start", exc_info=exc)
        if listener is not None:
            listener.close()
        return _fail(str(exc), STARTUP_FAILURE)

    def announce(port: int) -> None:
        print(
            f"agentfield-asgi listening on http://{args.host}:{port} (storage: {storage}, {where})",
            file=sys.stderr,
            flush=True,
        )

    # Worker processes build the app themselves: hand them the settings through the environment.
    export_settings(settings)
    options: dict[str, Any] = {
        "factory": True,
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": args.access_log,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
        "log_config": uvicorn_log_config(),
    }
    return run_uvicorn(options, args.workers, announce, listener)


def run_uvicorn(
    options: dict[str, Any],
    workers: int,
    announce: Callable[[int], None],
    listener: socket.socket,
) -> int:
    """Serve on ``listener`` until SIGINT/SIGTERM; 0 after a clean shutdown, 3 when the
    app cannot start."""
    # SIGTERM stops the server like SIGINT. uvicorn shuts down gracefully, then re-raises
    # the signal for the previous handler: this one turns it into KeyboardInterrupt (exit 0
    # below) instead of death by signal.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if workers > 1:
            # What uvicorn.run does for workers, on the socket already bound.
            from uvicorn.supervisors import Multiprocess

            announce(int(listener.getsockname()[1]))
            config = uvicorn.Config(APP_FACTORY, workers=workers, **options)
            Multiprocess(config, sockets=[listener]).run()
            return 0
        server = _AnnouncingServer(uvicorn.Config(APP_FACTORY, **options), announce)
        try:
            server.run(sockets=[listener])
        except SystemExit:  # some uvicorn versions exit(1) when the app cannot start
            return STARTUP_FAILURE
    except KeyboardInterrupt:  # SIGINT/SIGTERM, after the graceful shutdown
        return 0
    return 0 if server.started else STARTUP_FAILURE


def _fail(message: str, status: int = 2) -> int:
    print(f"agentfield-asgi: error: {message}", file=sys.stderr)
    return status


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that reports where it listens once its socket is bound."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[int], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce(int(self.servers[0].sockets[0].getsockname()[1]))


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
    if args.command == "mcp":
        try:
            from .integrations.mcp.stdio import run_mcp
        except ImportError as exc:
            return _fail(f"'mcp' needs the mcp extra: pip install 'agentfield-asgi[mcp]' ({exc})")
        return run_mcp(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
