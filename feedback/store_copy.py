"""Copy one store into another (`python -m feedback copy --to URL`): a local trial's SQLite file
into the Postgres database of a deployment.

Idempotent: rows are upserted by their ids, so a copy can be run again (after more ratings, or
after an interruption) without duplicating anything. A score is only overwritten by a newer state
of itself, so a copy never undoes a change the target already has. Leases are not copied: the
target's outboxes deliver what is still pending.
"""

from __future__ import annotations

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


def _upsert(table: str, columns: list[str], keys: tuple[str, ...]) -> str:
    values = ", ".join(f":{c}" for c in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    where = f" WHERE {_NEWER_SCORE}" if table == "scores" else ""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}{where}"
    )
