"""DATABASE_URL as the settings read it: Postgres or SQLite, the password never shown.

Pure text handling (SQLAlchemy's URL parser, no connection), so the settings can check the
URL without importing the store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DIALECTS = ("sqlite", "postgresql")


def normalize_url(raw: str) -> str:
    """A DATABASE_URL as SQLAlchemy takes it: postgres:// and postgresql:// use psycopg 3.

    Raises ValueError with a sentence for anything that is not SQLite or Postgres.
    """
    text = raw.strip()
    for prefix in ("postgres://", "postgresql://"):
        if text.startswith(prefix):
            text = "postgresql+psycopg://" + text[len(prefix) :]
    try:
        url = _split_like_a_browser(text)
    except ArgumentError:
        raise ValueError(
            "DATABASE_URL must look like postgresql://user:password@host:5432/dbname "
            "or sqlite:///path/to/file.sqlite3"
        ) from None
    if url.get_backend_name() not in DIALECTS:
        raise ValueError(
            f"DATABASE_URL must be a postgresql:// or sqlite:/// URL, got a {url.get_backend_name()}:// one"
        )
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        raise ValueError("DATABASE_URL: this app talks to Postgres through psycopg 3 (postgresql+psycopg://)")
    if url.get_backend_name() == "sqlite" and not url.database:
        raise ValueError(
            "DATABASE_URL: a sqlite:/// URL needs a file path (an in-memory store would lose everything)"
        )
    return url.render_as_string(hide_password=False)


def _split_like_a_browser(text: str) -> URL:
    """Parse a URL splitting user info at the LAST "@", as urllib and libpq do: a password
    holding "@" (not percent-encoded) must not turn its tail into the host name, which is
    printed in the banner and in errors."""
    url = make_url(text)
    if url.get_backend_name() == "sqlite" or not url.host or "@" not in url.host:
        return url
    parts = urlsplit(text)
    return url.set(
        username=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None,
        host=parts.hostname,
        port=parts.port,
    )


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


def password_of(url: str) -> str:
    return make_url(url).password or "" if url else ""
