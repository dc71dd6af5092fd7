"""The pages a newcomer reads one after another agree: examples/README.md installs and
runs things with the commands of README.md and the quickstart, and the mounting page's
servers do not take the ports the quickstart's agents already hold."""

from __future__ import annotations

from pathlib import Path

from .samples import ROOT, Command, logical_lines, parse_blocks, split_commands

EXAMPLES = ROOT / "examples" / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.md"
SERVERS = {"agentfield-asgi", "uvicorn"}


def commands(page: Path) -> list[Command]:
    return [
        command
        for block in parse_blocks(page)
        if block.lang == "bash" and block.skip_reason is None
        for line in logical_lines(block.code)
        for command in split_commands(line)
    ]


def served_ports(page: Path) -> set[str]:
    """Ports the page's server commands listen on (``serve`` without ``--port``: 8080)."""
    ports = set()
    for command in commands(page):
        if command.program not in SERVERS:
            continue
        argv = command.argv
        ports.add(argv[argv.index("--port") + 1] if "--port" in argv else "8080")
    return ports


def test_examples_install_as_the_readme_and_quickstart_do() -> None:
    first = [c.argv for c in commands(ROOT / "README.md")]
    quickstart = [c.argv for c in commands(QUICKSTART)]
    install = first[: first.index([".venv/bin/agentfield-asgi", "serve"])]
    assert install == quickstart[: len(install)]  # the same first line on both pages
    assert [c.argv for c in commands(EXAMPLES)][: len(install)] == install


def test_examples_run_programs_from_the_virtual_environment() -> None:
    programs = [c.argv[0] for c in commands(EXAMPLES) if c.program != "curl"]
    assert programs, "no commands found"
    assert all(p.startswith(".venv/bin/") or p == "python3" for p in programs), programs


def test_examples_by_hand_are_the_quickstart_commands() -> None:
    quickstart = [(c.assignments, c.argv) for c in commands(QUICKSTART)]
    by_hand = [(c.assignments, c.argv) for c in commands(EXAMPLES) if c.program in SERVERS]
    assert len(by_hand) == 3
    assert all(command in quickstart for command in by_hand), by_hand


def test_the_mounting_samples_leave_the_quickstart_ports_free() -> None:
    quickstart = served_ports(QUICKSTART)
    assert quickstart >= {"8080", "8001", "8002"}
    mounting = served_ports(ROOT / "docs" / "mounting.md")
    assert mounting and not mounting & quickstart, mounting & quickstart
