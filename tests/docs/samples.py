"""Run the code samples of a Markdown page the way a reader would, in order.

Conventions (also stated in docs/index.md, "Writing docs"):

- Every fenced ``python`` block runs as a script (``python file.py``) in a fresh copy of
  the repository. A block whose first line is ``# name.py`` is saved as ``name.py`` first,
  so later blocks (``uvicorn name:app``) can use it.
- Every fenced ``bash`` block runs command by command: ``agentfield-asgi serve`` and
  ``uvicorn`` start servers that stay up for the rest of the page (starting one on a port
  already in use by the page stops the earlier one, as a reader would press Ctrl-C);
  ``curl`` must exit 0 with an HTTP status below 400 (a streaming ``curl -N`` / SSE URL
  runs in the background and must print something); ``export`` and ``NAME=value`` set the
  environment; ``python``, ``pip``, ``sqlite3``, ``pg_dump``, ``pg_restore``, ``psql`` and other
  ``agentfield-asgi`` commands run through bash and must exit 0. Any other command fails
  the test: mark such a block.
- Samples are written against the default address ``http://127.0.0.1:8080``. Every port
  after ``127.0.0.1:``, ``localhost:``, ``0.0.0.0:`` or ``--port`` stands for a free
  loopback port (the same one throughout a page), and when a sample talks to port 8080
  while the page has started no server there, the test starts ``agentfield-asgi serve``
  there first. Every ``postgresql://...`` URL stands for a fresh database on a throwaway
  PostgreSQL cluster.
- ``<!-- sample: skip <reason> -->`` on the line before a fence leaves that one block out.
  Use it only for what cannot run (a fragment, a command that needs another machine).
- A ``text`` block right after a python block, introduced by a line ending in "prints:",
  is exactly what that python block must print.
- Other blocks (``json``, ``text``, ``nginx``...) are illustrations, never run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentfield_asgi.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]

BASH_LANGS = {"bash", "sh", "shell"}
SHELL_PROGRAMS = {
    "python",
    "python3",
    "pip",
    "pip3",
    "sqlite3",
    "pg_dump",
    "pg_restore",
    "psql",
    "agentfield-asgi",
}
DEFAULT_SERVE_PORT = "8080"
DEFAULT_UVICORN_PORT = "8000"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".nox", "__pycache__", "*.egg-info", "build", "*.db", "*.db-*",
    ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis", "test-artifacts",
    "bench-results*",
)  # fmt: skip

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<lang>[\w+-]*)[^`]*$")
_MARK = re.compile(r"^\s*<!--\s*sample:\s*(?P<kind>[\w-]+)\s*(?P<reason>.*?)\s*-->\s*$")
_FILE_HEADER = re.compile(r"^#\s*(?P<name>[\w./-]+\.py)\s*$")
# A PostgreSQL URL, or a port after a loopback host or --port (one pass, so the
# throwaway cluster's own port inside a substituted URL is never remapped).
_ADDRESSES = re.compile(
    r"(?P<pg>postgres(?:ql)?(?:\+\w+)?://[^\s'\"`)]+)"
    r"|(?P<host>(?:127\.0\.0\.1|localhost|0\.0\.0\.0):|--port[ =])(?P<port>\d{2,5})\b"
)
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)\}|(?P<name>[A-Za-z_]\w*))")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_OPERATOR_CHARS = set("();<>|&")


class SampleError(AssertionError):
    """A sample did not run as written."""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip_reason: str | None = None
    intro: str = ""  # the last line of prose before the fence

    @property
    def is_expected_output(self) -> bool:
        """A ``text`` block after a line ending "prints:" is what the python block before
        it prints."""
        return self.lang == "text" and self.intro.endswith("prints:")

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """Fenced blocks of ``page``, with the ``<!-- sample: ... -->`` mark before each."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks = len(fence["indent"]), fence["ticks"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{ticks}`*\s*$", lines[j]):
            text = lines[j]
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            j += 1
        code = "\n".join(body) + "\n"
        skip, intro = _mark(page, lines, i), _intro(lines, i)[1]
        blocks.append(Block(page, i + 1, fence["lang"].lower(), code, skip, intro))
        i = j + 1
    return blocks


def _intro(lines: list[str], fence_index: int) -> tuple[int, str]:
    """The nearest non-blank line before a fence, and its index (-1: none)."""
    k = fence_index - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    return k, lines[k].strip() if k >= 0 else ""


def _mark(page: Path, lines: list[str], fence_index: int) -> str | None:
    k, line = _intro(lines, fence_index)
    if "<!--" not in line or "sample:" not in line:
        return None
    mark = _MARK.match(line)
    if not mark or mark["kind"] != "skip" or not mark["reason"]:
        raise SampleError(
            f"{page.name}:{k + 1}: the only mark is '<!-- sample: skip <reason> -->', got {line!r}"
        )
    return mark["reason"]


def strip_comment(line: str) -> str:
    """``line`` without a shell comment (``#`` starting a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
            elif ch == "\\" and quote == '"':
                continue
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def logical_lines(code: str) -> list[str]:
    """Commands of a bash block: continuations joined, comments and blank lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = strip_comment(raw) if not pending else raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(strip_comment(line))
    if pending.strip():
        out.append(pending.strip())
    return out


def is_operator(token: str) -> bool:
    return bool(token) and set(token) <= _OPERATOR_CHARS


@dataclass
class Command:
    assignments: dict[str, str]
    argv: list[str]  # may hold redirections (only run through bash)
    background: bool

    @property
    def program(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else ""


def split_commands(line: str) -> list[Command]:
    """One logical line -> commands separated by ``&&``, ``;`` or a background ``&``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[Command] = []
    current: list[str] = []

    def close(background: bool) -> None:
        if not current:
            return
        n = 0
        while n < len(current) and _ASSIGNMENT.match(current[n]):
            n += 1
        assigns = dict(t.split("=", 1) for t in current[:n])
        commands.append(Command(assigns, current[n:], background))
        current.clear()

    for token in lexer:
        if token in ("&&", ";", "&"):
            close(token == "&")
        else:
            current.append(token)
    close(False)
    return commands


class CommandServer(ServerProcess):
    """A server started by a sample's own command line (literal argv)."""

    def __init__(self, argv: list[str], *, port: int, env: dict[str, str], cwd: Path) -> None:
        super().__init__(port=port, env=env, cwd=str(cwd), ready_path="/")
        self.argv = argv

    def command(self) -> list[str]:
        return self.argv


class PageRun:
    """The state of one page's samples: a repository copy, environment, servers, ports."""

    def __init__(self, page: Path, workdir: Path, create_database: Callable[[], str]) -> None:
        self.page = page
        self.cwd = workdir / "repo"
        shutil.copytree(ROOT, self.cwd, ignore=COPY_IGNORE, symlinks=True)
        self.create_database = create_database
        self.ports: dict[str, str] = {}
        self.databases: dict[str, str] = {}
        self.servers: dict[int, ServerProcess] = {}
        self.streams: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        bindir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFIELD_")}
        self.env["PATH"] = bindir + os.pathsep + self.env.get("PATH", "")
        self.ran = 0

    # -------------------------------------------------------------- substitution

    def port(self, documented: str) -> str:
        if documented not in self.ports:
            self.ports[documented] = str(free_port())
        return self.ports[documented]

    def localize(self, text: str) -> str:
        """Documented ports and PostgreSQL URLs -> this run's free ports and databases."""

        def sub(m: re.Match[str]) -> str:
            if m["pg"]:
                if m["pg"] not in self.databases:
                    self.databases[m["pg"]] = self.create_database()
                return self.databases[m["pg"]]
            return m["host"] + self.port(m["port"])

        return _ADDRESSES.sub(sub, text)

    def expand(self, token: str, env: dict[str, str]) -> str:
        return _VAR.sub(lambda m: env.get(m["braced"] or m["name"], m[0]), token)

    # -------------------------------------------------------------- running

    def run(self, block: Block, output: Block | None = None) -> None:
        """Run ``block``; ``output``: the text block holding what it must print."""
        if block.skip_reason is not None:
            return
        if block.lang == "python":
            printed = self.run_python(block)
            if output is not None and printed != output.code:
                self.fail(block, f"printed {printed!r}, {output.where} says {output.code!r}")
        elif block.lang in BASH_LANGS:
            for line in logical_lines(self.localize(block.code)):
                for command in split_commands(line):
                    self.run_command(block, command)
        else:
            return
        self.ran += 1

    def run_python(self, block: Block) -> str:
        code = self.localize(block.code)
        header = _FILE_HEADER.match(code.splitlines()[0]) if code.strip() else None
        name = header["name"] if header else f"_sample_{block.page.stem}_{block.line}.py"
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        self.ensure_default_server(code)
        result = subprocess.run(
            [sys.executable, name], cwd=self.cwd, env=self.env, capture_output=True, timeout=300
        )
        if result.returncode != 0:
            self.fail(block, f"python {name} exited {result.returncode}", result)
        return result.stdout.decode()

    def run_command(self, block: Block, cmd: Command) -> None:
        env = {**self.env, **{k: self.expand(v, self.env) for k, v in cmd.assignments.items()}}
        argv = [self.expand(t, env) for t in cmd.argv]
        if not argv:
            self.env.update(env)
            return
        if cmd.program == "export":
            for arg in argv[1:]:
                name, _, value = arg.partition("=")
                self.env[name] = value
            return
        if cmd.program == "agentfield-asgi" and argv[1:2] == ["serve"]:
            self.start_server(block, argv, env, DEFAULT_SERVE_PORT)
        elif cmd.program == "uvicorn":
            self.start_server(block, argv, env, DEFAULT_UVICORN_PORT)
        elif cmd.program == "curl" and _is_stream(argv):
            self.start_stream(block, argv, env)
        elif cmd.background:
            self.fail(
                block, f"`{shlex.join(argv)} &`: only servers and streams run in the background"
            )
        elif cmd.program == "curl":
            self.run_curl(block, argv, env)
        elif cmd.program in SHELL_PROGRAMS:
            self.run_shell(block, argv, env)
        else:
            self.fail(
                block,
                f"`{cmd.program}` is not a command the docs test runs; make the block runnable "
                "or mark it `<!-- sample: skip <reason> -->`",
            )

    def start_server(
        self, block: Block, argv: list[str], env: dict[str, str], default: str
    ) -> None:
        given = [a.split("=", 1)[1] for a in argv if a.startswith("--port=")]
        if "--port" in argv:
            given.append(argv[argv.index("--port") + 1])
        if given:
            port = int(given[-1])
        else:
            port = int(self.port(default))
            argv = [*argv, "--port", str(port)]
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            argv = [str(self.cwd / argv[0]), *argv[1:]]
        self.stop_server(port)
        server = CommandServer(argv, port=port, env=env, cwd=self.cwd)
        self.servers[port] = server
        try:
            server.start(timeout=120)
        except RuntimeError as exc:
            self.fail(block, f"`{shlex.join(argv)}` did not start: {exc}")

    def stop_server(self, port: int) -> None:
        server = self.servers.pop(port, None)
        if server is not None:
            server.stop()

    def ensure_default_server(self, text: str) -> None:
        """Port 8080 in a sample with no server started there: ``agentfield-asgi serve``."""
        port = self.ports.get(DEFAULT_SERVE_PORT)
        if port and f":{port}" in text and int(port) not in self.servers:
            server = CommandServer(
                ["agentfield-asgi", "serve", "--port", port],
                port=int(port),
                env=self.env,
                cwd=self.cwd,
            )
            self.servers[int(port)] = server
            server.start(timeout=120)

    def start_stream(self, block: Block, argv: list[str], env: dict[str, str]) -> None:
        self.ensure_default_server(" ".join(argv))
        out = self.cwd / f"_stream_{len(self.streams)}.out"
        with out.open("wb") as f:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        self.streams.append((block.where, proc, out))

    def run_curl(self, block: Block, argv: list[str], env: dict[str, str]) -> None:
        self.ensure_default_server(" ".join(argv))
        check_status = not any(a in ("-w", "--write-out") for a in argv)
        if check_status:
            argv = [*argv, "--write-out", "\n%{http_code}"]
        result = subprocess.run(argv, cwd=self.cwd, env=env, capture_output=True, timeout=120)
        if result.returncode != 0:
            self.fail(block, f"`{shlex.join(argv)}` exited {result.returncode}", result)
        if check_status:
            status = result.stdout.decode(errors="replace").rsplit("\n", 1)[-1].strip()
            if not status.isdigit() or int(status) >= 400:
                self.fail(block, f"`{shlex.join(argv)}` answered HTTP {status}", result)

    def run_shell(self, block: Block, argv: list[str], env: dict[str, str]) -> None:
        self.ensure_default_server(" ".join(argv))
        script = " ".join(t if is_operator(t) else shlex.quote(t) for t in argv)
        result = subprocess.run(
            ["bash", "-c", script], cwd=self.cwd, env=env, capture_output=True, timeout=600
        )
        if result.returncode != 0:
            self.fail(block, f"`{script}` exited {result.returncode}", result)

    def finish(self) -> None:
        """Stop everything; a stream must have printed something and not have failed."""
        problems = []
        for where, proc, out in self.streams:
            code = proc.poll()
            if code is None:
                proc.terminate()
                proc.wait(15)
            elif code not in (0, 28):  # 28: --max-time reached
                problems.append(f"{where}: stream exited {code}: {out.read_text(errors='replace')}")
            if out.exists() and not out.read_bytes().strip():
                problems.append(f"{where}: the streaming curl printed nothing")
        self.stop_all()
        if problems:
            raise SampleError("\n".join(problems))

    def stop_all(self) -> None:
        for _, proc, _ in self.streams:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for port in list(self.servers):
            self.stop_server(port)

    def fail(
        self, block: Block, message: str, result: subprocess.CompletedProcess[bytes] | None = None
    ) -> None:
        parts = [f"{block.where}: {message}"]
        if result is not None:
            parts.append("stdout:\n" + result.stdout.decode(errors="replace")[-4000:])
            parts.append("stderr:\n" + result.stderr.decode(errors="replace")[-4000:])
        for port, server in self.servers.items():
            parts.append(
                f"server on port {port} ({shlex.join(server.command())}):\n"
                + server.output()[-3000:]
            )
        raise SampleError("\n".join(parts))


def _is_stream(argv: list[str]) -> bool:
    short_n = any(re.fullmatch(r"-[A-Za-z]*N[A-Za-z]*", a) for a in argv)
    return short_n or "--no-buffer" in argv or any("/events/sse" in a for a in argv)


def run_page(page: Path, workdir: Path, create_database: Callable[[], str]) -> PageRun:
    """Run every sample of ``page`` in order; raises :class:`SampleError` on the first failure."""
    blocks = parse_blocks(page)
    run = PageRun(page, workdir, create_database)
    try:
        for block, after in zip(blocks, [*blocks[1:], None], strict=False):
            run.run(block, after if after is not None and after.is_expected_output else None)
    except BaseException:
        run.stop_all()
        raise
    run.finish()
    return run
