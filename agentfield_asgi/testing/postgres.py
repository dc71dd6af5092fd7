"""A throwaway PostgreSQL cluster in a temporary directory, on a loopback port.

As root the cluster runs as the ``postgres`` user (``initdb`` refuses root), and that user
must be able to reach the binaries and the cluster's files. A virtualenv in a private
directory (a 0700 checkout, ``/root``) hides binaries such as the ``pgserver`` wheel's from
it, so they are run from a shared copy of their install tree (hard links where the
filesystem allows, made once and reused) instead: the user's own directories keep their
permissions.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .servers import free_port

CLUSTER_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the cluster would not start (the message is one line:
    what failed, why, and what to do)."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` (Debian), else ``pg_ctl`` on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable(
        "PostgreSQL binaries not found: install Debian's 'postgresql' package "
        "(apt-get install postgresql) or put initdb on PATH"
    )


def pgvector_bindir() -> Path:
    """Binaries of the PostgreSQL with pgvector that the ``pgserver`` wheel bundles (found
    without importing the package, which has side effects)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise PostgresUnavailable(
            "the pgserver wheel (PostgreSQL with pgvector) is not installed: "
            "pip install 'agentfield-asgi[test]' (or 'pgserver')"
        )
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bindir / "initdb").exists():
        raise PostgresUnavailable(
            f"the pgserver wheel has no initdb in {bindir}: reinstall it "
            "(pip install --force-reinstall pgserver)"
        )
    return bindir


def one_line(text: str, limit: int = 400) -> str:
    """A tool's multi-line complaint as one line (for errors that must read at a glance)."""
    joined = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def _as_cluster_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", CLUSTER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def can_reach(path: Path) -> bool:
    """Whether the cluster's user can reach (traverse to and execute or enter) ``path``."""
    if os.geteuid() != 0:
        return os.access(path, os.X_OK)
    probe = subprocess.run(_as_cluster_user(["test", "-x", str(path)]), capture_output=True)
    return probe.returncode == 0


def _check_cluster_user() -> None:
    if os.geteuid() != 0:
        return
    if not shutil.which("runuser"):
        raise PostgresUnavailable(
            "running as root needs 'runuser' (util-linux) to start PostgreSQL as "
            f"'{CLUSTER_USER}': install util-linux, or run as a non-root user"
        )
    probe = subprocess.run(["id", "-u", CLUSTER_USER], capture_output=True)
    if probe.returncode != 0:
        raise PostgresUnavailable(
            f"running as root needs a '{CLUSTER_USER}' user to own the cluster (initdb "
            "refuses root): install Debian's 'postgresql' package, which creates it, "
            "or run as a non-root user"
        )


def shared_base() -> Path:
    """A directory for cluster files and binary copies that the cluster's user can enter:
    the temp dir when it can, else ``/tmp``."""
    temp = Path(tempfile.gettempdir())
    return temp if can_reach(temp) else Path("/tmp")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links refused: a real copy
        shutil.copy2(src, dst)
    return dst


def _install_layout(bindir: Path) -> tuple[Path, list[Path]]:
    """The folders the binaries need, and the folder their relative layout starts from.

    PostgreSQL finds its libraries and share files relative to its binaries, so the whole
    install tree (``bindir``'s parent) is needed. A wheel's binaries also load libraries
    through ``$ORIGIN`` paths into the wheel's ``<package>.libs`` folder (auditwheel's
    layout, as the ``pgserver`` wheel has), which comes along at the same relative place.
    """
    tree = bindir.resolve().parent
    base, folders = tree.parent, [tree]
    for folder in [tree, *tree.parents][:3]:
        libs = folder.parent / f"{folder.name}.libs"
        if libs.is_dir():
            base = folder.parent
            folders.append(libs)
    return base, folders


def reachable_bindir(bindir: Path) -> Path:
    """``bindir`` itself when the cluster's user can run from it, else the same binaries in
    a shared copy of their install (hard links where possible), made once per source and
    reused. A copy is reused only if it is ours and nobody else can write to it (it runs
    as the cluster's user).
    """
    if not (bindir / "initdb").is_file():
        raise PostgresUnavailable(
            f"no initdb in {bindir}: point bindir at a PostgreSQL install's bin directory"
        )
    if can_reach(bindir / "initdb"):
        return bindir
    base, folders = _install_layout(bindir)
    run_bindir = Path(bindir.resolve().relative_to(base))
    stamp = (bindir / "initdb").stat()
    digest = hashlib.sha256(f"{base}:{stamp.st_mtime_ns}:{stamp.st_size}".encode()).hexdigest()
    target = shared_base() / f"agentfield-pginstall-{digest[:16]}"
    if target.exists():
        info = target.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & 0o022 and can_reach(target):
            return target / run_bindir
        raise PostgresUnavailable(
            f"{target} exists but is not a copy this user made (owner or mode differ): "
            "remove it and try again"
        )
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        for folder in folders:
            copy = staging / "tree" / folder.relative_to(base)
            shutil.copytree(folder, copy, symlinks=True, copy_function=_link_or_copy)
        for made in [staging / "tree", *(staging / "tree").rglob("*")]:
            if made.is_dir() and not made.is_symlink():
                made.chmod(made.stat().st_mode | 0o755)  # our new folders, readable by all
        try:
            (staging / "tree").rename(target)
        except OSError:  # another process made it first: use theirs
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / run_bindir


class ThrowawayPostgres:
    """``initdb`` + ``pg_ctl start`` in a temp dir; :meth:`stop` removes everything.

    ``durable=False`` turns fsync off (fine for tests that do not crash the cluster).
    ``bindir`` picks other PostgreSQL binaries (e.g. the ``pgserver`` wheel's, which has
    pgvector); as root they run from a copy the ``postgres`` user can reach when needed
    (``run_bindir``), while ``bindir`` names the ones asked for.
    """

    def __init__(
        self, *, durable: bool = False, port: int | None = None, bindir: Path | None = None
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.run_bindir: Path | None = None
        self.port = port or free_port()
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="agentfield-pg-", dir=shared_base()))
        self.datadir = self.root / "data"
        self.running = False

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(
        self, *args: str, check: bool = True, hint: str = ""
    ) -> subprocess.CompletedProcess[str]:
        if self.run_bindir is None:
            _check_cluster_user()
            self.run_bindir = reachable_bindir(self.bindir)
        cmd = _as_cluster_user([str(self.run_bindir / args[0]), *args[1:]])
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            reason = one_line(result.stderr or result.stdout) or f"exit {result.returncode}"
            raise PostgresUnavailable(f"{args[0]} failed: {reason}" + (f"; {hint}" if hint else ""))
        return result

    def start(self) -> ThrowawayPostgres:
        if not self.datadir.exists():
            self.datadir.mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(self.root, CLUSTER_USER, CLUSTER_USER)
                shutil.chown(self.datadir, CLUSTER_USER, CLUSTER_USER)
            args = ["initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres"]
            args += ["-E", "UTF8"]
            if not self.durable:
                args.append("--no-sync")
            self._run(*args, hint=f"the binaries are in {self.bindir}")
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = self.root / "log"
        self._run(
            *("pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(log), "-w", "start"),
            hint=f"the server's log is {log}",
        )
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run(
            *("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"),
            *("-c", f"CREATE DATABASE {name}"),
        )
        return self.url_for(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
