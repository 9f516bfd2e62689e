"""Copy one store into another (`python -m feedback copy --to URL`): a local trial's SQLite file
into the Postgres database of a deployment.

Idempotent: rows are upserted by their ids, so a copy can be run again (after more ratings, or
after an interruption) without duplicating anything. A score is only overwritten by a newer state
of itself, so a copy never undoes a change the target already has. Leases are not copied: the
target's outboxes deliver what is still pending.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from feedback.store import Store

BATCH = 500

# table -> its key columns; copied in this order (scores point at traces).
TABLES = {"traces": ("id",), "spans": ("trace_id", "span_id"), "scores": ("id",)}
# Columns a copy never carries over: which process delivers a score is the target's business.
SKIPPED = {"lease_owner", "lease_until"}
_NEWER_SCORE = """excluded.version > scores.version OR (excluded.version = scores.version AND
    (excluded.delivered_version > scores.delivered_version
     OR excluded.rejected_version > scores.rejected_version))"""


@dataclass
class CopyCounts:
    traces: int = 0
    spans: int = 0
    scores: int = 0


def count_rows(store: Store) -> CopyCounts:
    with store.read() as db:
        return CopyCounts(
            **{t: int(db.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()) for t in TABLES}
        )


def same_store(a: Store, b: Store) -> bool:
    """Whether two stores are one, however their URLs are spelt (a path, localhost, an IP)."""
    if a.dialect != b.dialect:
        return False
    if a.path is not None and b.path is not None:
        return a.path.exists() and b.path.exists() and os.path.samefile(a.path, b.path)
    identity = """SELECT current_database() AS db, pg_postmaster_start_time()::text AS started,
                  (SELECT oid FROM pg_database WHERE datname = current_database())::text AS oid"""
    return a.row(identity) == b.row(identity)


def copy_store(source: Store, target: Store, on_rows: Callable[[str, int], None] | None = None) -> CopyCounts:
    """Upsert every trace, span and score of `source` into `target`; return how many were read."""
    copied = CopyCounts()
    for table, keys in TABLES.items():
        with source.read() as src:
            result = src.execution_options(yield_per=BATCH).execute(
                text(f"SELECT * FROM {table} ORDER BY {', '.join(keys)}")
            )
            columns = [c for c in result.keys() if c not in SKIPPED]
            statement = text(_upsert(table, columns, keys))
            for batch in result.mappings().partitions(BATCH):
                rows = [{c: row[c] for c in columns} for row in batch]
                with target.transaction() as dst:
                    dst.execute(statement, rows)
                setattr(copied, table, getattr(copied, table) + len(rows))
                if on_rows is not None:
                    on_rows(table, len(rows))
    return copied


# What the target knows about Langfuse is never forgotten: a score its outbox sent exists there
# even if the source never sent it, so an undo copied later must still be deleted there.
_MERGED = {
    "remote_exists": "CASE WHEN scores.remote_exists = 1 OR excluded.remote_exists = 1 THEN 1 ELSE 0 END"
}


def _upsert(table: str, columns: list[str], keys: tuple[str, ...]) -> str:
    values = ", ".join(f":{c}" for c in columns)
    merged = _MERGED if table == "scores" else {}
    updates = ", ".join(f"{c} = {merged.get(c, f'excluded.{c}')}" for c in columns if c not in keys)
    where = f" WHERE {_NEWER_SCORE}" if table == "scores" else ""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}{where}"
    )
