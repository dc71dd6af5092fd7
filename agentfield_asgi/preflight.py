"""What ``agentfield-asgi serve`` checks before it starts uvicorn, so that a common mistake
ends in one line that says what to do, before storage is opened: the port is free (and
who holds it when not), PostgreSQL answers. Also the log setup that keeps other
libraries' chatter out of the default level."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

# Libraries whose INFO lines are about their own plumbing, not the user's service:
# ``databases`` logs every connect/disconnect, httpx (the SDK's transport, the control
# plane's forwarding) every request. Shown again with ``--log-level debug``.
CHATTY_LOGGERS = ("databases", "httpx", "httpcore")


def quiet_libraries(level: str) -> None:
    """Raise the chatty libraries' loggers to WARNING unless ``level`` is ``debug``."""
    quiet = level.lower() != "debug"
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


class PreflightError(Exception):
    """A reason ``serve`` cannot start, as the one line it prints."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound as uvicorn binds it; a
    :class:`PreflightError` naming the port (and its holder, when known) if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        message = f"cannot listen on {host}:{port}: {reason}"
        holder = port_holder(port)
        if holder:
            message += f" (held by {holder})"
        raise PreflightError(message) from exc
    sock.set_inheritable(True)  # uvicorn's worker processes serve it too
    return sock


def port_holder(port: int) -> str | None:
    """``pid N: command line`` of a process listening on TCP ``port``, read from /proc
    (Linux; None elsewhere, or when the holder belongs to another user)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return f"pid {proc.name}: {_command_line(proc)}"
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def _command_line(proc: Path) -> str:
    try:
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    text = " ".join(words) or "?"
    return text if len(text) <= 120 else text[:117] + "..."


def postgres_address(url: str) -> tuple[str, int] | None:
    """The TCP ``(host, port)`` a ``postgresql://`` URL names; None for a Unix socket."""
    parts = urlsplit(url)
    query_host = next(
        (v for k, _, v in (p.partition("=") for p in parts.query.split("&")) if k == "host"),
        None,
    )
    if query_host and query_host.startswith("/"):
        return None
    host = parts.hostname or query_host or "localhost"
    if host.startswith("/"):
        return None
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return host, port


def check_postgres_reachable(url: str, timeout: float = 5.0) -> None:
    """A :class:`PreflightError` (``cannot reach PostgreSQL at host:port: reason``) when
    nothing accepts TCP connections where ``url`` points."""
    address = postgres_address(url)
    if address is None:
        return
    host, port = address
    try:
        socket.create_connection(address, timeout=timeout).close()
    except ConnectionRefusedError as exc:
        raise PreflightError(
            f"cannot reach PostgreSQL at {host}:{port}: connection refused"
        ) from exc
    except socket.gaierror as exc:
        raise PreflightError(f"cannot reach PostgreSQL at {host}:{port}: unknown host") from exc
    except TimeoutError as exc:
        raise PreflightError(f"cannot reach PostgreSQL at {host}:{port}: timed out") from exc
    except OSError as exc:
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        raise PreflightError(f"cannot reach PostgreSQL at {host}:{port}: {reason}") from exc


__all__ = [
    "CHATTY_LOGGERS",
    "PreflightError",
    "bind_listener",
    "check_postgres_reachable",
    "port_holder",
    "postgres_address",
    "quiet_libraries",
]
