"""Developer and CI sessions: ``nox -s tests``, ``lint``, ``bench`` and ``soak``."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def _apt_install(session: nox.Session, packages: list[str]) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.warn(f"cannot install {packages}: not root or no apt-get")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )


def ensure_system_packages(session: nox.Session) -> None:
    """PostgreSQL (and a browser for the inspector test) come from Debian's packages."""
    missing = []
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        missing.append("postgresql")
    if not shutil.which("chromium"):
        missing.append("chromium")
    if missing:
        _apt_install(session, missing)


def run_lint(session: nox.Session) -> None:
    """ruff (format check + lint) and mypy on the package."""
    session.run("ruff", "format", "--check", "agentfield_asgi", "tests", "examples", "noxfile.py")
    session.run("ruff", "check", "agentfield_asgi", "tests", "examples", "noxfile.py")
    session.run("mypy", "agentfield_asgi")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Lint first (the README's test command is what CI runs), then the whole test suite,
    both backends, real servers on loopback."""
    ensure_system_packages(session)
    session.install("-e", ".[test,lint]")
    run_lint(session)
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--timeout", "300", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (format check + lint) and mypy on the package, alone."""
    # mypy checks the integrations against their libraries
    session.install("-e", ".[lint,mcp,langgraph,metrics,otel]")
    run_lint(session)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """``agentfield-asgi bench`` (pass --quick / --full after --)."""
    ensure_system_packages(session)
    if not shutil.which("redis-server") or not shutil.which("wrk"):
        _apt_install(session, ["redis-server", "wrk"])
    session.install("-e", ".[bench]")
    session.run("agentfield-asgi", "bench", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """100 clients with mixed operations + 100 SSE subscribers for 2 minutes on loopback
    (not in the default run). Pass driver options after --, e.g. ``-- --duration 30``."""
    ensure_system_packages(session)
    session.install("-e", ".[test]")
    session.run("python", "-m", "agentfield_asgi.testing.soak", *session.posargs)
