"""A throwaway PostgreSQL server for tests: a fresh cluster under a temp dir, on a free loopback port.

Uses the machine's server binaries (Debian's ``postgresql`` package puts them under
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so under root the
cluster is owned by and run as the ``postgres`` system user that the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ENABLE_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin nor on PATH; "
    "install them to run the PostgreSQL catalog tests (Debian/Ubuntu: apt-get install -y postgresql; "
    "macOS: brew install postgresql and put its bin folder on PATH)"
)


def find_bin_dir() -> Path | None:
    """The newest server under /usr/lib/postgresql (Debian's layout), else the one on PATH, if any."""
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if candidates:
        return max(candidates, key=lambda p: _version(p.parent.name))
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path and shutil.which("pg_ctl") else None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "icegate") -> str:
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> tuple[Callable[[Sequence[str]], list[str]], int | None, int | None]:
    """How to run a command as a non-root user, and that user's ids (None when not root)."""
    if os.geteuid() != 0:
        return list, None, None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no 'postgres' user to run the server as") from None
    if runuser := shutil.which("runuser"):
        return (lambda args: [runuser, "-u", "postgres", "--", *args]), account.pw_uid, account.pw_gid
    if su := shutil.which("su"):
        return (lambda args: [su, "postgres", "-c", shlex.join(args)]), account.pw_uid, account.pw_gid
    raise RuntimeError("running as root and neither runuser nor su is available")


@contextlib.contextmanager
def running_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a cluster in a fresh temp dir and stop and remove it on exit, however the tests ended."""
    as_server_user, uid, gid = _as_server_user()
    # Directly under the system temp dir: the server user must reach it (pytest's are root-only).
    base = Path(tempfile.mkdtemp(prefix="icegate-postgres-"))
    data = base / "data"
    data.mkdir()
    if uid is not None and gid is not None:
        for folder in (base, data):
            os.chown(folder, uid, gid)

    def run(*args: str) -> None:
        subprocess.run(as_server_user(args), check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        port = _free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w", "start")
        try:
            server = PostgresServer("127.0.0.1", port, "postgres")
            _wait_until_ready(server)
            yield server
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_ready(server: PostgresServer, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="postgres"):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
