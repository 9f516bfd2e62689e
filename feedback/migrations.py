"""Named, run-once migrations for the store, recorded in a `_migrations` table.

One history for SQLite and Postgres: the scripts are written once, in SQL both take; the only
translation is SQLite's REAL, which is double precision there but single precision (seconds lost
on an epoch time) in Postgres. Append new migrations to the end of MIGRATIONS; never edit one
that has shipped (stores written by earlier versions have them recorded by name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from feedback.database import WRITE

Migration = Callable[[Connection], None]

# Any number: it names the lock that keeps two app processes from migrating one Postgres at once.
_PG_MIGRATION_LOCK = 7_204_851


def _run(db: Connection, script: str) -> None:
    # Statement by statement, so the whole migration stays inside one transaction (DDL is
    # transactional in both databases).
    if db.dialect.name == "postgresql":
        script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)
    for statement in script.split(";"):
        if statement.strip():
            db.exec_driver_sql(statement)


def m001_traces_and_spans(db: Connection) -> None:
    _run(
        db,
        """
        CREATE TABLE traces (
            id TEXT PRIMARY KEY,
            name TEXT,
            input TEXT,
            output TEXT,
            user_id TEXT,
            session_id TEXT,
            status TEXT,
            status_message TEXT,
            start_time REAL,
            end_time REAL,
            latency_ms REAL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            model TEXT,
            tags TEXT,
            metadata TEXT
        );
        CREATE INDEX traces_session ON traces (session_id);
        CREATE INDEX traces_start ON traces (start_time);
        CREATE TABLE spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_id TEXT,
            name TEXT,
            kind TEXT,
            start_time REAL,
            end_time REAL,
            status TEXT,
            status_message TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            attributes TEXT,
            PRIMARY KEY (trace_id, span_id)
        );
        """,
    )


def m002_scores(db: Connection) -> None:
    # `version` counts changes; the outbox delivers until delivered_version catches up.
    _run(
        db,
        """
        CREATE TABLE scores (
            id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL,
            session_id TEXT,
            user_id TEXT,
            name TEXT NOT NULL,
            value REAL,
            data_type TEXT NOT NULL,
            reason TEXT,
            note TEXT,
            comment TEXT,
            source TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 1,
            delivered_version INTEGER NOT NULL DEFAULT 0,
            rejected_version INTEGER NOT NULL DEFAULT 0,
            remote_exists INTEGER NOT NULL DEFAULT 0,
            delivery_error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0
        );
        CREATE INDEX scores_trace ON scores (trace_id);
        CREATE INDEX scores_pending ON scores (delivered_version, version);
        """,
    )


def m003_spans_start(db: Connection) -> None:
    # Retention walks spans oldest first; with trace_id in the index it never reads the rows.
    _run(db, "CREATE INDEX spans_start ON spans (start_time, trace_id)")


def m004_score_leases(db: Connection) -> None:
    # Several app processes share one Postgres: the outbox claims a score for a while before it
    # delivers it, so no two processes send it, and one that dies hands it over when it expires.
    _run(
        db,
        """
        ALTER TABLE scores ADD COLUMN lease_owner TEXT;
        ALTER TABLE scores ADD COLUMN lease_until REAL NOT NULL DEFAULT 0
        """,
    )


def m005_evaluation(db: Connection) -> None:
    # Online evaluation. A trace or a rating is "seen" once the evaluators' jobs for it exist;
    # what was stored before evaluation existed counts as seen (`backfill` judges the past on
    # purpose, so an upgrade never starts judging months of traffic by itself).
    _run(
        db,
        """
        ALTER TABLE traces ADD COLUMN eval_seen INTEGER NOT NULL DEFAULT 1;
        CREATE INDEX traces_eval_unseen ON traces (id) WHERE eval_seen = 0;
        ALTER TABLE scores ADD COLUMN eval_seen_version INTEGER NOT NULL DEFAULT 0;
        UPDATE scores SET eval_seen_version = version;
        ALTER TABLE scores ADD COLUMN string_value TEXT;
        ALTER TABLE scores ADD COLUMN metadata TEXT;
        CREATE TABLE eval_jobs (
            id TEXT PRIMARY KEY,
            evaluator TEXT NOT NULL,
            version TEXT NOT NULL,
            kind TEXT NOT NULL,
            target_kind TEXT NOT NULL,
            target_id TEXT NOT NULL,
            revision TEXT NOT NULL,
            trigger TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until REAL NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            called_at REAL,
            finished REAL,
            latency_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            score_id TEXT,
            eval_trace_id TEXT,
            value REAL,
            string_value TEXT,
            reasoning TEXT,
            error TEXT
        );
        CREATE INDEX eval_jobs_due ON eval_jobs (status, next_attempt_at);
        CREATE INDEX eval_jobs_evaluator ON eval_jobs (evaluator, created);
        CREATE INDEX eval_jobs_target ON eval_jobs (target_id);
        CREATE INDEX eval_jobs_called ON eval_jobs (called_at) WHERE called_at IS NOT NULL;
        CREATE TABLE eval_sessions (
            session_id TEXT PRIMARY KEY,
            user_id TEXT,
            turns INTEGER NOT NULL,
            last_turn_end REAL NOT NULL,
            judged_turns INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX eval_sessions_pending ON eval_sessions (last_turn_end) WHERE judged_turns < turns
        """,
    )


def m006_eval_cost(db: Connection) -> None:
    # What each judge call cost (NULL: unknown, never taken for zero).
    _run(db, "ALTER TABLE eval_jobs ADD COLUMN cost REAL")


def m007_datasets(db: Connection) -> None:
    # Offline evaluation: dataset runs and one result per item (a run name continues where it
    # stopped: the items it has are not run again).
    _run(
        db,
        """
        CREATE TABLE dataset_runs (
            name TEXT PRIMARY KEY,
            dataset TEXT NOT NULL,
            model TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE TABLE dataset_results (
            run TEXT NOT NULL,
            item_id TEXT NOT NULL,
            input TEXT,
            expected TEXT,
            answer TEXT,
            trace_id TEXT,
            strict INTEGER NOT NULL DEFAULT 0,
            flexible INTEGER NOT NULL DEFAULT 0,
            has_number INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            latency_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            created REAL NOT NULL,
            PRIMARY KEY (run, item_id)
        )
        """,
    )


def m008_costs(db: Connection) -> None:
    # Dollars per LLM call and per trace. NULL is unknown (a model without a known price), never
    # zero; a trace's cost is unknown when any of its calls' is. Traces stored before this have
    # no cost: unknown.
    _run(
        db,
        """
        ALTER TABLE spans ADD COLUMN cost REAL;
        ALTER TABLE traces ADD COLUMN cost REAL
        """,
    )


def m009_dataset_items(db: Connection) -> None:
    # Datasets kept in the store (python -m evals dataset from-traces: real turns users disliked
    # or judges scored low). An item with no expected output is run and judged but not graded:
    # `graded` = 0 keeps it out of the accuracy instead of counting it wrong.
    _run(
        db,
        """
        CREATE TABLE dataset_items (
            dataset TEXT NOT NULL,
            item_id TEXT NOT NULL,
            input TEXT NOT NULL,
            expected TEXT,
            metadata TEXT,
            source_trace TEXT,
            created REAL NOT NULL,
            PRIMARY KEY (dataset, item_id)
        );
        ALTER TABLE dataset_results ADD COLUMN graded INTEGER NOT NULL DEFAULT 1
        """,
    )


# The dashboard's per-day figures are cached (dashboard_days) and kept right by a change counter
# per UTC day (dashboard_changes) that the database bumps itself, in the writer's transaction,
# whenever a trace or a score of that day changes: every writer (the app, the CLI, a copy,
# another process) is covered without any of them knowing. Triggers are the one thing written
# per database (SQLite's trigger bodies, Postgres' plpgsql). A day is the start time's UTC day,
# as dashboard.queries computes it; the scheduler's eval_seen marks and the outbox's delivery
# bookkeeping do not count as changes.
_DASHBOARD_TABLES = """
    CREATE TABLE dashboard_changes (day INTEGER PRIMARY KEY, version INTEGER NOT NULL);
    CREATE TABLE dashboard_days (
        day INTEGER PRIMARY KEY,
        version INTEGER NOT NULL,
        format TEXT NOT NULL,
        facts TEXT NOT NULL,
        computed REAL NOT NULL
    );
    CREATE INDEX traces_dashboard_time ON traces (start_time, model, tags, status, latency_ms,
        prompt_tokens, completion_tokens, cost, user_id, id);
    CREATE INDEX traces_dashboard_user ON traces (user_id, start_time, model, tags, status, latency_ms,
        prompt_tokens, completion_tokens, cost, id);
    CREATE INDEX scores_undelivered ON scores (id) WHERE delivered_version < version AND rejected_version < version
"""
_SCORE_COLUMNS_SHOWN = "value, deleted, name, reason, source, data_type, trace_id"

_SQLITE_TOUCH = """INSERT INTO dashboard_changes (day, version)
        SELECT CAST({time} / 86400 AS INTEGER), 1 {source} WHERE {time} IS NOT NULL {extra}
        ON CONFLICT (day) DO UPDATE SET version = dashboard_changes.version + 1;"""


def _sqlite_touch(time: str, source: str = "", extra: str = "") -> str:
    return _SQLITE_TOUCH.format(time=time, source=source, extra=extra)


_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER dashboard_trace_insert AFTER INSERT ON traces BEGIN
        {_sqlite_touch("NEW.start_time")}
    END""",
    f"""CREATE TRIGGER dashboard_trace_update AFTER UPDATE ON traces WHEN OLD.eval_seen = NEW.eval_seen BEGIN
        {_sqlite_touch("OLD.start_time")}
        {_sqlite_touch("NEW.start_time", extra="AND CAST(NEW.start_time / 86400 AS INTEGER) IS NOT CAST(OLD.start_time / 86400 AS INTEGER)")}
    END""",
    f"""CREATE TRIGGER dashboard_trace_delete AFTER DELETE ON traces BEGIN
        {_sqlite_touch("OLD.start_time")}
    END""",
    f"""CREATE TRIGGER dashboard_score_insert AFTER INSERT ON scores BEGIN
        {_sqlite_touch("t.start_time", "FROM traces t", "AND t.id = NEW.trace_id")}
    END""",
    f"""CREATE TRIGGER dashboard_score_update AFTER UPDATE OF {_SCORE_COLUMNS_SHOWN} ON scores BEGIN
        {_sqlite_touch("t.start_time", "FROM traces t", "AND t.id = OLD.trace_id")}
        {_sqlite_touch("t.start_time", "FROM traces t", "AND t.id = NEW.trace_id AND NEW.trace_id IS NOT OLD.trace_id")}
    END""",
    f"""CREATE TRIGGER dashboard_score_delete AFTER DELETE ON scores BEGIN
        {_sqlite_touch("t.start_time", "FROM traces t", "AND t.id = OLD.trace_id")}
    END""",
]

# The INSERT is written out in each function: calling a shared SQL function from them made a chat
# turn and its vote 0.6 ms slower on Postgres (measured, 2.0 -> 2.6 ms); inline, 0.3 ms.
_PG_TOUCH = """INSERT INTO dashboard_changes (day, version) VALUES ({day}, 1)
            ON CONFLICT (day) DO UPDATE SET version = dashboard_changes.version + 1;"""

_POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION dashboard_trace_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        old_day INTEGER;
        new_day INTEGER;
    BEGIN
        IF TG_OP <> 'INSERT' AND OLD.start_time IS NOT NULL THEN
            old_day := FLOOR(OLD.start_time / 86400);
            {_PG_TOUCH.format(day="old_day")}
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.start_time IS NOT NULL THEN
            new_day := FLOOR(NEW.start_time / 86400);
            IF new_day IS DISTINCT FROM old_day THEN
                {_PG_TOUCH.format(day="new_day")}
            END IF;
        END IF;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION dashboard_score_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        old_day INTEGER;
        new_day INTEGER;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            SELECT FLOOR(start_time / 86400) INTO old_day FROM traces WHERE id = OLD.trace_id;
            IF old_day IS NOT NULL THEN
                {_PG_TOUCH.format(day="old_day")}
            END IF;
        END IF;
        IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.trace_id IS DISTINCT FROM OLD.trace_id) THEN
            SELECT FLOOR(start_time / 86400) INTO new_day FROM traces WHERE id = NEW.trace_id;
            IF new_day IS NOT NULL THEN
                {_PG_TOUCH.format(day="new_day")}
            END IF;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER dashboard_trace_insert_delete AFTER INSERT OR DELETE ON traces
        FOR EACH ROW EXECUTE PROCEDURE dashboard_trace_changed()""",
    """CREATE TRIGGER dashboard_trace_update AFTER UPDATE ON traces
        FOR EACH ROW WHEN (OLD.eval_seen = NEW.eval_seen) EXECUTE PROCEDURE dashboard_trace_changed()""",
    f"""CREATE TRIGGER dashboard_score AFTER INSERT OR DELETE OR UPDATE OF {_SCORE_COLUMNS_SHOWN} ON scores
        FOR EACH ROW EXECUTE PROCEDURE dashboard_score_changed()""",
]


def m010_dashboard(db: Connection) -> None:
    _run(db, _DASHBOARD_TABLES)
    triggers = _POSTGRES_TRIGGERS if db.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in triggers:
        db.exec_driver_sql(statement)


def m011_score_sent_at(db: Connection) -> None:
    # When the last create of a score was sent: Langfuse lands a create seconds after it
    # arrives but runs a delete at once, so an undo must be sent again once the create landed;
    # and a server that files scores by the day it received them needs the day it was sent.
    _run(
        db,
        """
        ALTER TABLE scores ADD COLUMN remote_sent_at REAL NOT NULL DEFAULT 0;
        ALTER TABLE scores ADD COLUMN remote_day TEXT;
        ALTER TABLE scores ADD COLUMN remote_recheck_at REAL NOT NULL DEFAULT 0
        """,
    )
    resend_refused_lists(db)


def resend_refused_lists(db: Connection) -> None:
    """Ratings a self-hosted server refused only because they came as a list (earlier versions
    took that 400 as final): send them again, in the form the server takes."""
    _run(
        db,
        """UPDATE scores SET rejected_version = 0, delivery_error = NULL, next_attempt_at = 0
           WHERE delivered_version < version
             AND substr(delivery_error, 1, 30) = 'HTTP 400: Invalid request data'""",
    )


# The bundled demo model's file (llms.local_llm.GGUF_NAME when this migration was written): a
# judge span naming it marks a score as the demo judge's. feedback/ imports nothing of llms/.
_BUNDLED_MODEL = "SmolLM2-135M-Instruct"


def m012_score_causes(db: Connection) -> None:
    # What caused each evaluation job and score: a job or score that read a user's rating at one
    # version records (rating score id, version), so changing or undoing that vote cancels the
    # jobs and deletes the scores it alone caused. `scored_by` says who scored, so "ratings"
    # (people's votes) are never mixed with judges', code checks' or a demo judge's scores.
    _run(
        db,
        """
        ALTER TABLE eval_jobs ADD COLUMN cause_score_id TEXT;
        ALTER TABLE eval_jobs ADD COLUMN cause_version INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE scores ADD COLUMN cause_score_id TEXT;
        ALTER TABLE scores ADD COLUMN cause_version INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE scores ADD COLUMN scored_by TEXT;
        CREATE INDEX eval_jobs_cause ON eval_jobs (cause_score_id, cause_version)
            WHERE cause_score_id IS NOT NULL;
        CREATE INDEX scores_cause ON scores (cause_score_id, cause_version) WHERE cause_score_id IS NOT NULL;
        UPDATE eval_jobs SET
            cause_score_id = (SELECT s.id FROM scores s
                              WHERE s.trace_id = eval_jobs.target_id AND s.name = 'user-feedback'
                              ORDER BY s.id LIMIT 1),
            cause_version = CAST(SUBSTR(revision, 8) AS INTEGER)
        WHERE target_kind = 'turn' AND SUBSTR(revision, 1, 7) = 'rating-' AND revision <> 'rating-0';
        UPDATE scores SET scored_by = CASE
            WHEN name = 'user-feedback' THEN 'user'
            WHEN source = 'EVAL' AND name = 'dataset-correct' THEN 'dataset'
            WHEN source = 'EVAL' THEN 'judge'
            ELSE 'reviewer' END
        """,
    )
    # A score takes the cause of the last job that wrote it (rating readers run once per rating
    # version, all writing the same score id).
    latest: dict[str, tuple[str | None, int]] = {}
    for score_id, cause, version in db.execute(
        text(
            """SELECT score_id, cause_score_id, cause_version FROM eval_jobs
               WHERE status = 'completed' AND score_id IS NOT NULL AND SUBSTR(revision, 1, 7) = 'rating-'
               ORDER BY finished, created"""
        )
    ):
        latest[score_id] = (cause, int(version or 0))
    caused = [{"id": k, "cause": c, "v": v} for k, (c, v) in latest.items() if c is not None]
    if caused:
        db.execute(
            text("UPDATE scores SET cause_score_id = :cause, cause_version = :v WHERE id = :id"), caused
        )
    for (name,) in db.execute(text("SELECT DISTINCT evaluator FROM eval_jobs WHERE kind = 'code'")).all():
        db.execute(
            text(
                """UPDATE scores SET scored_by = 'check' WHERE source = 'EVAL'
                   AND (name = :name OR SUBSTR(name, 1, :n) = :prefix)"""
            ),
            {"name": name, "n": len(name) + 1, "prefix": f"{name}."},
        )
    # Scores the bundled demo model judged before this migration: their judge call's span names it.
    db.execute(
        text(
            """UPDATE scores SET scored_by = 'demo-judge' WHERE scored_by = 'judge' AND id IN (
                   SELECT j.score_id FROM eval_jobs j JOIN spans s ON s.trace_id = j.eval_trace_id
                   WHERE j.kind = 'llm' AND j.score_id IS NOT NULL AND s.kind = 'LLM'
                     AND s.attributes LIKE :model)"""
        ),
        {"model": f"%{_BUNDLED_MODEL}%"},
    )


def m013_ratings_index(db: Connection) -> None:
    # The dashboard's Worst answers reads people's dislikes as one set: a partial index of the
    # live ratings keeps it from walking every score (judge scores outnumber votes).
    _run(
        db,
        """CREATE INDEX scores_live_ratings ON scores (trace_id, value)
           WHERE name = 'user-feedback' AND source = 'user' AND deleted = 0""",
    )


# Destinations besides Langfuse (Phoenix, ...): each keeps its own delivery state per score, so
# one that is down never holds back another. The database itself records that a score needs
# delivering to every registered destination whenever its version changes (insert, change,
# undo, withdrawal), whichever code path or process wrote it; scores written before a
# destination was registered are not sent to it (their traces never reached it either).
_DELIVERY_TABLES = """
    CREATE TABLE destinations (name TEXT PRIMARY KEY, since TEXT NOT NULL);
    CREATE TABLE score_deliveries (
        score_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        want_version INTEGER NOT NULL,
        delivered_version INTEGER NOT NULL DEFAULT 0,
        rejected_version INTEGER NOT NULL DEFAULT 0,
        remote_exists INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        delivery_error TEXT,
        lease_owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (score_id, destination)
    );
    CREATE INDEX score_deliveries_due ON score_deliveries (destination, next_attempt_at)
        WHERE delivered_version < want_version AND rejected_version < want_version
"""
_SQLITE_DELIVERY_TRIGGERS = [
    f"""CREATE TRIGGER score_deliveries_{when} AFTER {event} ON scores BEGIN
        INSERT INTO score_deliveries (score_id, destination, want_version)
            SELECT NEW.id, d.name, NEW.version FROM destinations d WHERE NEW.created >= d.since
        ON CONFLICT (score_id, destination) DO UPDATE SET want_version = excluded.want_version,
            attempts = 0, next_attempt_at = 0;
    END"""
    for when, event in (("insert", "INSERT"), ("update", "UPDATE OF version"))
]
_POSTGRES_DELIVERY_TRIGGERS = [
    """CREATE FUNCTION score_deliveries_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO score_deliveries (score_id, destination, want_version)
            SELECT NEW.id, d.name, NEW.version FROM destinations d WHERE NEW.created >= d.since
        ON CONFLICT (score_id, destination) DO UPDATE SET want_version = excluded.want_version,
            attempts = 0, next_attempt_at = 0;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER score_deliveries_changed AFTER INSERT OR UPDATE OF version ON scores
        FOR EACH ROW EXECUTE PROCEDURE score_deliveries_changed()""",
]


def m014_score_deliveries(db: Connection) -> None:
    _run(db, _DELIVERY_TABLES)
    triggers = _POSTGRES_DELIVERY_TRIGGERS if db.dialect.name == "postgresql" else _SQLITE_DELIVERY_TRIGGERS
    for statement in triggers:
        db.exec_driver_sql(statement)


# The review queue (issue 25). An item is one trace in one queue (the rule that put it there, or
# "manual"), unique per (trace, queue), claimed by a reviewer with a lease as evaluation jobs are
# (feedback.review_queue). `calibration` marks the random sample the corrected quality estimate
# rests on, with the rate it was drawn at. A review is one per trace: who reviewed it last, the
# corrected answer and the note (the labels themselves are scores, source ANNOTATION).
# `review_seen` / `review_seen_version` are the rules' bookkeeping, as eval_seen is the
# evaluators': what was stored before this migration counts as seen (no queue of months of
# history appears by itself on an upgrade).
_REVIEW_TABLES = """
    CREATE TABLE review_items (
        id TEXT PRIMARY KEY,
        trace_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        reason TEXT,
        created REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        lease_owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        calibration INTEGER NOT NULL DEFAULT 0,
        sample_rate REAL,
        added_by TEXT,
        finished REAL,
        finished_by TEXT,
        UNIQUE (trace_id, queue)
    );
    CREATE INDEX review_items_next ON review_items (queue, state, created);
    CREATE INDEX review_items_open ON review_items (state, created) WHERE state IN ('pending', 'leased');
    CREATE INDEX review_items_calibration ON review_items (trace_id) WHERE calibration = 1;
    CREATE TABLE reviews (
        trace_id TEXT PRIMARY KEY,
        reviewer TEXT NOT NULL,
        corrected_answer TEXT,
        note TEXT,
        labels INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX reviews_corrected ON reviews (updated) WHERE corrected_answer IS NOT NULL;
    ALTER TABLE traces ADD COLUMN review_seen INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX traces_review_unseen ON traces (id) WHERE review_seen = 0;
    ALTER TABLE scores ADD COLUMN review_seen_version INTEGER NOT NULL DEFAULT 0;
    UPDATE scores SET review_seen_version = version;
    CREATE INDEX scores_review_unseen ON scores (id) WHERE review_seen_version < version;
    CREATE INDEX scores_labels ON scores (name, updated) WHERE scored_by = 'reviewer' AND deleted = 0
"""
# The rules marking a trace seen is bookkeeping, like the evaluators' eval_seen: it must not make
# the dashboard recompute that trace's day (m010's trigger, recreated with one more condition).
_SQLITE_TRACE_UPDATE = f"""CREATE TRIGGER dashboard_trace_update AFTER UPDATE ON traces
    WHEN OLD.eval_seen = NEW.eval_seen AND OLD.review_seen = NEW.review_seen BEGIN
        {_sqlite_touch("OLD.start_time")}
        {_sqlite_touch("NEW.start_time", extra="AND CAST(NEW.start_time / 86400 AS INTEGER) IS NOT CAST(OLD.start_time / 86400 AS INTEGER)")}
    END"""
_POSTGRES_TRACE_UPDATE = """CREATE TRIGGER dashboard_trace_update AFTER UPDATE ON traces
    FOR EACH ROW WHEN (OLD.eval_seen = NEW.eval_seen AND OLD.review_seen = NEW.review_seen)
    EXECUTE PROCEDURE dashboard_trace_changed()"""


def m015_review_queue(db: Connection) -> None:
    _run(db, _REVIEW_TABLES)
    if db.dialect.name == "postgresql":
        db.exec_driver_sql("DROP TRIGGER dashboard_trace_update ON traces")
        db.exec_driver_sql(_POSTGRES_TRACE_UPDATE)
    else:
        db.exec_driver_sql("DROP TRIGGER dashboard_trace_update")
        db.exec_driver_sql(_SQLITE_TRACE_UPDATE)


def m016_review_queue_order(db: Connection) -> None:
    # A claim walks the open items oldest first and stops at the first it may take: partial
    # indexes in `created` order (per queue, and over all queues) instead of 015's (state, created),
    # which left SQLite sorting every open item at each claim; and the items a reviewer holds by
    # owner (the claim asks first). 18 ms a claim with 15,000 open items before, about 1 ms now.
    _run(
        db,
        """
        DROP INDEX review_items_open;
        CREATE INDEX review_items_open ON review_items (created) WHERE state IN ('pending', 'leased');
        CREATE INDEX review_items_queue_open ON review_items (queue, created) WHERE state IN ('pending', 'leased');
        CREATE INDEX review_items_leased ON review_items (lease_owner, created) WHERE state = 'leased'
        """,
    )


def m017_trace_variants(db: Connection) -> None:
    # Which A/B variant answered each turn, and of which experiment (config/variants.py): filled
    # from the root span's metadata by the store's exporter; NULL outside an experiment. Indexed
    # for the per-variant results (an experiment's turns by variant and time). Rows written before
    # carry no variant in their metadata unless they came from an experiment run elsewhere (a
    # copied store): those are read back from the metadata, found by a LIKE that skips the rest.
    _run(
        db,
        """
        ALTER TABLE traces ADD COLUMN variant TEXT;
        ALTER TABLE traces ADD COLUMN experiment TEXT;
        CREATE INDEX traces_variant ON traces (variant) WHERE variant IS NOT NULL;
        CREATE INDEX traces_experiment ON traces (experiment, variant, start_time) WHERE experiment IS NOT NULL
        """,
    )
    if db.dialect.name == "postgresql":
        variant, experiment = "(metadata::json ->> 'variant')", "(metadata::json ->> 'experiment')"
    else:
        variant, experiment = "json_extract(metadata, '$.variant')", "json_extract(metadata, '$.experiment')"
    # text(), not the driver's own SQL: psycopg reads a bare % as a placeholder.
    db.execute(
        text(
            f"""UPDATE traces SET variant = {variant}, experiment = {experiment}
            WHERE metadata LIKE '%"variant": %' AND metadata LIKE '%"experiment": %'"""
        )
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_traces_and_spans", m001_traces_and_spans),
    ("002_scores", m002_scores),
    ("003_spans_start", m003_spans_start),
    ("004_score_leases", m004_score_leases),
    ("005_evaluation", m005_evaluation),
    ("006_eval_cost", m006_eval_cost),
    ("007_datasets", m007_datasets),
    ("008_costs", m008_costs),
    ("009_dataset_items", m009_dataset_items),
    ("010_dashboard", m010_dashboard),
    ("011_score_sent_at", m011_score_sent_at),
    ("012_score_causes", m012_score_causes),
    ("013_ratings_index", m013_ratings_index),
    ("014_score_deliveries", m014_score_deliveries),
    ("015_review_queue", m015_review_queue),
    ("016_review_queue_order", m016_review_queue_order),
    ("017_trace_variants", m017_trace_variants),
]


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names.

    Each runs in its own transaction holding the database's write lock (SQLite's BEGIN
    IMMEDIATE, an advisory lock on Postgres), so app processes starting together apply each once.
    """
    applied = []
    with engine.connect() as db:
        db.execution_options(**{WRITE: True})
        for name, migration in MIGRATIONS:
            with db.begin():
                if db.dialect.name == "postgresql":
                    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
                db.exec_driver_sql(
                    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
                )
                if db.execute(text("SELECT 1 FROM _migrations WHERE name = :name"), {"name": name}).first():
                    continue
                migration(db)
                db.execute(
                    text("INSERT INTO _migrations (name, applied_at) VALUES (:name, :at)"),
                    {"name": name, "at": datetime.now(UTC).isoformat()},
                )
            applied.append(name)
    return applied
