"""The throwaway Postgres cluster really starts, serves SQL, goes away, comes back, and leaves nothing behind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from tests.pg_server import PostgresServer, PostgresServerError, find_pg_bin, require_pg_bin


@pytest.fixture(scope="module")
def pg_bin() -> Path:
    return require_pg_bin()


@pytest.fixture(scope="module")
def pg(pg_bin: Path) -> Iterator[PostgresServer]:
    with PostgresServer(pg_bin) as server:
        yield server


def refuses_connections(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) != 0


def test_serves_sql_on_loopback_with_durability_off(pg: PostgresServer) -> None:
    assert pg.url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.pid is not None and pg.base_dir is not None
    with psycopg.connect(host=pg.host, port=pg.port, user="postgres", dbname="postgres") as conn:
        addr, port = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
        assert (addr, port) == ("127.0.0.1", pg.port)
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            assert conn.execute(f"SHOW {name}").fetchone() == ("off",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(pg.base_dir),)
    # The unix socket lives in the cluster's own temp dir, not /var/run/postgresql.
    with psycopg.connect(host=str(pg.base_dir), port=pg.port, user="postgres", dbname="postgres") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_create_database_gives_an_empty_database_for_sqlalchemy(pg: PostgresServer) -> None:
    url = pg.create_database("t_create")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/t_create"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
            assert tables == 0
            conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
            conn.execute(text("INSERT INTO notes (body) VALUES ('héllo'), ('world')"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT body FROM notes ORDER BY id")).scalars().all() == [
                "héllo",
                "world",
            ]
        # Drop works even with the engine's pooled connection still open (WITH (FORCE)).
        pg.drop_database("t_create")
    finally:
        engine.dispose()
    with pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 't_create'").fetchone() == (0,)
    pg.drop_database("t_create")  # dropping a missing database is not an error


def test_database_names_are_checked(pg: PostgresServer) -> None:
    with pytest.raises(ValueError, match="database name"):
        pg.create_database('x"; DROP DATABASE postgres; --')


def test_stop_then_start_on_the_same_port_keeps_the_data(pg_bin: Path) -> None:
    with PostgresServer(pg_bin) as server:
        url = server.create_database("t_restart")
        with server.connect("t_restart", autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        port, first_pid = server.port, server.pid
        held = server.connect("t_restart", autocommit=True)
        try:
            server.stop()
            assert server.pid is None and not server.running
            assert refuses_connections(server.host, port)
            with pytest.raises(psycopg.OperationalError):
                held.execute("SELECT 1")  # a connection open across the outage breaks...
            with pytest.raises(psycopg.OperationalError):
                server.connect("t_restart")  # ...and new ones are refused
        finally:
            held.close()

        server.start()
        assert server.port == port and server.url_for("t_restart") == url
        assert server.pid is not None and server.pid != first_pid
        with server.connect("t_restart") as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]


def test_exit_stops_the_server_and_removes_its_dir(pg: PostgresServer, pg_bin: Path) -> None:
    with PostgresServer(pg_bin) as server:
        base, port = server.base_dir, server.port
        assert base is not None and (base / "data" / "PG_VERSION").is_file()
        assert port != pg.port  # two clusters side by side
        with server.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not base.exists()
    assert refuses_connections("127.0.0.1", port)
    assert server.pid is None
    server.close()  # closing twice is harmless
    with pg.connect() as conn:  # the other cluster was not touched
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_startup_error_carries_the_server_log_and_cleans_up(pg_bin: Path) -> None:
    server = PostgresServer(pg_bin, settings={"shared_buffers": "plenty"})
    with pytest.raises(PostgresServerError) as caught:
        server.setup()
    message = str(caught.value)
    assert "pg_ctl start failed" in message and "server log" in message
    assert 'invalid value for parameter "shared_buffers": "plenty"' in message  # from the server's own log
    assert server.base_dir is not None and not server.base_dir.exists()


def test_find_pg_bin_takes_the_newest_complete_version(tmp_path: Path) -> None:
    assert find_pg_bin(tmp_path) is None
    for version, tools in {"9.6": ["initdb", "pg_ctl"], "15": ["initdb", "pg_ctl"], "16": ["initdb"]}.items():
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for tool in tools:
            (bin_dir / tool).touch()
    assert find_pg_bin(tmp_path) == tmp_path / "15" / "bin"  # 16 has no pg_ctl


def test_missing_binaries_skip_unless_postgres_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="binaries not found"):
        require_pg_bin(tmp_path)
    monkeypatch.setenv("REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_POSTGRES is set but PostgreSQL server binaries"):
        require_pg_bin(tmp_path)
