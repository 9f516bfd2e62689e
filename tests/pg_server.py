"""A throwaway PostgreSQL cluster for tests: a real server in a temp dir, on a free port of 127.0.0.1.

    with PostgresServer() as pg:
        url = pg.create_database("store_test")  # postgresql+psycopg://postgres@127.0.0.1:PORT/store_test
        pg.stop()  # the database goes away...
        pg.start()  # ...and comes back on the same port with the same data

It uses Debian's server binaries (/usr/lib/postgresql/<version>/bin) and never touches a system
cluster or /var/run/postgresql. As root, every server command runs as the `postgres` user.
Tests call require_pg_bin() first: it skips when the binaries are missing, or fails when
REQUIRE_POSTGRES is set (CI sets it, so a missing install can never pass as a skip).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # the OS user that owns the cluster when we run as root
DB_USER = "postgres"  # the database superuser (trust auth, no password)
DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Durability off: a test cluster is thrown away, so nothing needs to survive a crash.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
}


class PostgresServerError(RuntimeError):
    """The cluster could not be created, started or stopped; the message holds the server log."""


def find_pg_bin(root: Path = PG_ROOT) -> Path | None:
    """The newest <root>/<version>/bin that holds initdb and pg_ctl, or None."""
    found = []
    for bin_dir in root.glob("*/bin"):
        version = bin_dir.parent.name
        if not re.fullmatch(r"\d+(\.\d+)*", version):
            continue
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            found.append((tuple(int(part) for part in version.split(".")), bin_dir))
    return max(found)[1] if found else None


def postgres_required() -> bool:
    return os.environ.get("REQUIRE_POSTGRES", "").strip() not in ("", "0")


def require_pg_bin(root: Path = PG_ROOT) -> Path:
    """The server binaries; else skip the test, or fail it when REQUIRE_POSTGRES is set (as in CI)."""
    bin_dir = find_pg_bin(root)
    if bin_dir is not None:
        return bin_dir
    missing = f"PostgreSQL server binaries not found (no {root}/*/bin with initdb and pg_ctl)"
    if postgres_required():
        pytest.fail(
            f"REQUIRE_POSTGRES is set but {missing}: install Debian's postgresql package "
            "(.ci/run does it), or unset REQUIRE_POSTGRES to skip these tests",
            pytrace=False,
        )
    pytest.skip(f"{missing}; install Debian's postgresql package to run these tests")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _owner_argv(argv: list[str]) -> list[str]:
    """Postgres refuses to run as root, so as root every server command runs as the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *argv]
    return argv


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # cwd: the postgres user may not be allowed into the caller's cwd (e.g. under /root).
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    for name in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS"):
        env.pop(name, None)
    return subprocess.run(
        _owner_argv(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _destroy(pg_ctl: Path, data_dir: Path, base_dir: Path) -> None:
    """Stop the server at once (no checkpoint) and remove the cluster; safe to call in any state."""
    pid = _read_pid(data_dir)
    if pid is not None:
        try:
            done = _run(
                [str(pg_ctl), "stop", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "10"], base_dir, 20
            )
            stopped = done.returncode == 0
        except (OSError, subprocess.SubprocessError):
            stopped = False
        if not stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base_dir, ignore_errors=True)


class PostgresServer:
    """A throwaway cluster in a fresh temp dir, listening on 127.0.0.1:<free port> and a socket in that dir."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        settings: dict[str, Any] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise PostgresServerError(f"PostgreSQL server binaries not found under {PG_ROOT}/*/bin")
        self.bin_dir = Path(found)
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.timeout_s = timeout_s
        self.host = "127.0.0.1"
        self.port = 0
        self.user = DB_USER
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self.log_file: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        self.setup()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def setup(self) -> None:
        """Create the cluster and start it; on any failure, remove what was made and raise."""
        if self.base_dir is not None:
            raise PostgresServerError("this PostgresServer was already set up")
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgtest-"))
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        # Removes the cluster even if close() is never called (at the latest when the interpreter exits).
        self._finalizer = weakref.finalize(self, _destroy, self._pg_ctl, self.data_dir, self.base_dir)
        try:
            self._initdb()
            for attempt in range(3):
                self.port = free_port(self.host)
                self._write_config()
                try:
                    self.start()
                    return
                except PostgresServerError as error:
                    # Another process took the free port between our probe and the bind: take another.
                    if attempt == 2 or "could not bind" not in str(error):
                        raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the server immediately (-m immediate) and remove its temp dir."""
        if self._finalizer is not None:
            self._finalizer()

    def start(self) -> None:
        """Start (or restart after stop()) on the same port and data dir; waits until it takes connections."""
        data_dir, log_file = self._paths()
        offset = log_file.stat().st_size if log_file.exists() else 0
        argv = [str(self._pg_ctl), "start", "-D", str(data_dir), "-l", str(log_file)]
        self._pg_ctl_run([*argv, "-w", "-t", str(int(self.timeout_s))], "start", offset)

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (the database "goes away"); start() brings it back."""
        data_dir, log_file = self._paths()
        offset = log_file.stat().st_size if log_file.exists() else 0
        argv = [str(self._pg_ctl), "stop", "-D", str(data_dir), "-m", mode]
        self._pg_ctl_run([*argv, "-w", "-t", str(int(self.timeout_s))], "stop", offset)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (from postmaster.pid), else None."""
        return _read_pid(self.data_dir) if self.data_dir is not None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # -- addresses and databases ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{_checked_name(database)}"

    def conninfo(self, database: str = "postgres") -> str:
        """libpq connection string (for psycopg.connect)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={_checked_name(database)}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        import psycopg

        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.conninfo(database), **kwargs)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        with self.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{_checked_name(name)}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop the database if it exists, closing any connections still open to it."""
        with self.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_checked_name(name)}" WITH (FORCE)')

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace") if self.log_file else ""
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, dir={self.base_dir}, pid={self.pid})"

    # -- internals -----------------------------------------------------------------------------------

    @property
    def _pg_ctl(self) -> Path:
        return self.bin_dir / "pg_ctl"

    def _paths(self) -> tuple[Path, Path]:
        if (
            self.data_dir is None
            or self.log_file is None
            or self.base_dir is None
            or not self.base_dir.exists()
        ):
            raise PostgresServerError("the cluster does not exist (not set up, or already closed)")
        return self.data_dir, self.log_file

    def _initdb(self) -> None:
        assert self.base_dir is not None and self.data_dir is not None
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OS_USER)
            os.chown(self.base_dir, owner.pw_uid, owner.pw_gid)
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            DB_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        done = _run(argv, self.base_dir, self.timeout_s)
        if done.returncode != 0:
            hint = ""
            if os.geteuid() == 0:
                hint = (
                    f" as user {OS_USER} (who must be able to reach the temp dir: "
                    "if a parent is private, point TMPDIR at a directory such as /tmp)"
                )
            raise PostgresServerError(
                f"initdb failed (exit {done.returncode}) in {self.base_dir}{hint}:\n{done.stdout}{done.stderr}"
            )

    def _write_config(self) -> None:
        assert self.data_dir is not None and self.base_dir is not None
        settings = {
            **self.settings,
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.base_dir),
        }
        lines = ["", "# tests/pg_server.py: a throwaway test cluster"]
        lines += [f"{key} = '{str(value).replace(chr(39), chr(39) * 2)}'" for key, value in settings.items()]
        # Later lines win, so appending again (a new port on retry) overrides the previous block.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")

    def _pg_ctl_run(self, argv: list[str], action: str, log_offset: int) -> None:
        assert self.base_dir is not None
        try:
            done = _run(argv, self.base_dir, self.timeout_s + 10)
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as error:
            output, code = f"{error}", None
        if code == 0:
            return
        log = self.log_text()[log_offset:][-6000:]
        raise PostgresServerError(
            f"pg_ctl {action} failed (exit {code}) for the cluster in {self.data_dir} on port {self.port}:\n"
            f"{output.strip()}\n--- server log ({self.log_file}) ---\n{log.strip() or '(empty)'}"
        )


def _checked_name(name: str) -> str:
    if not DB_NAME.fullmatch(name):
        raise ValueError(f"database name must match {DB_NAME.pattern}, got {name!r}")
    return name
