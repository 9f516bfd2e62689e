"""The A/B variant of each turn in the store: `traces.variant` / `traces.experiment`, filled from the
root span's metadata by the store's exporter (with and without Langfuse), and read back from the
metadata of traces written before the columns existed (migration 017). Both backends."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

import feedback.migrations as migrations
from feedback.store import Store, TraceRecord
from feedback.tracing import Telemetry
from tests.helpers import wait_for


def _turn(telemetry: Telemetry, metadata: dict[str, str], tags: tuple[str, ...] = ()) -> str:
    with telemetry.turn(message="q", user_id="u", session_id="s", metadata=metadata, extra_tags=tags) as root:
        root.set_output("a")
        trace_id = root.trace_id
    telemetry.flush_to_store()
    return trace_id


def _stored(store: Store, trace_id: str) -> dict:
    """The trace's row once the store has it (a flush is bounded: under load it may still be on its way)."""
    return wait_for(lambda: store.get_trace(trace_id), timeout=20)


def test_the_exporter_fills_variant_and_experiment_from_the_root_metadata(store_url):
    store = Store(store_url)
    telemetry = Telemetry(store, trace_name="T", tags=("app",), export_delay_ms=10)
    try:
        in_ab = _turn(telemetry, {"model_id": "m", "variant": "b", "experiment": "exp1"}, ("variant:b",))
        plain = _turn(telemetry, {"model_id": "m"})
        row = _stored(store, in_ab)
        assert (row["variant"], row["experiment"]) == ("b", "exp1")
        assert json.loads(row["tags"]) == ["app", "variant:b"]
        assert json.loads(row["metadata"])["variant"] == "b"
        row = _stored(store, plain)
        assert (row["variant"], row["experiment"]) == (None, None)
    finally:
        telemetry.shutdown()
        store.close()


def test_names_that_look_like_json_stay_text_through_langfuse(tmp_path, fake_langfuse):
    """Langfuse's propagation keeps metadata values raw: '123' and 'true' are names, not JSON."""
    store = Store(tmp_path / "db.sqlite3")
    telemetry = Telemetry.with_langfuse(
        store,
        # A key of its own: the Langfuse SDK keeps one client per public key per process, and
        # another test's client (test_otlp's "pk-lf-test") would take this test's spans.
        public_key=f"pk-lf-variants-{uuid.uuid4().hex[:8]}",
        secret_key="sk-lf-test",
        base_url=fake_langfuse.url,
        timeout_s=2,
        trace_name="T",
        export_delay_ms=10,
    )
    try:
        trace_id = _turn(
            telemetry, {"variant": "123", "experiment": "true", "assigned": "x"}, ("variant:123",)
        )
        row = _stored(store, trace_id)
        assert (row["variant"], row["experiment"]) == ("123", "true")
        metadata = json.loads(row["metadata"])
        assert (metadata["variant"], metadata["experiment"], metadata["assigned"]) == ("123", "true", "x")
        assert "variant:123" in json.loads(row["tags"])
    finally:
        telemetry.shutdown()
        store.close()


def test_existing_callers_of_trace_record_keep_working(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    record = TraceRecord("a" * 32, "T", "q", "a", "u", "s", "OK", None, 1.0, 2.0, "m", [], {})
    store.write_spans([], [record])
    assert store.get_trace("a" * 32)["variant"] is None
    store.write_spans([], [TraceRecord("b" * 32, "T", "q", "a", "u", "s", "OK", None, 1.0, 2.0, "m", [], {},
                                       variant="a", experiment="e")])  # fmt: skip
    assert store.get_trace("b" * 32)["variant"] == "a"
    store.close()


def test_migration_reads_the_variant_of_earlier_rows_from_their_metadata(store_url, monkeypatch):
    before = [m for m in migrations.MIGRATIONS if m[0] != "017_trace_variants"]
    assert len(before) == len(migrations.MIGRATIONS) - 1
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    store = Store(store_url)
    insert = text(
        "INSERT INTO traces (id, name, start_time, end_time, tags, metadata) VALUES (:id, 'T', 1, 2, '[]', :m)"
    )
    with store.transaction() as db:
        db.execute(insert, {"id": "1" * 32, "m": json.dumps({"variant": "b", "experiment": "e1", "k": 1})})
        db.execute(insert, {"id": "2" * 32, "m": json.dumps({"model_id": "m"})})
        db.execute(insert, {"id": "3" * 32, "m": None})
    store.close()
    monkeypatch.undo()
    store = Store(store_url)
    try:
        got = {r["id"][0]: (r["variant"], r["experiment"]) for r in store.rows("SELECT * FROM traces")}
        assert got == {"1": ("b", "e1"), "2": (None, None), "3": (None, None)}
    finally:
        store.close()


@pytest.mark.parametrize("column", ["variant", "experiment"])
def test_the_columns_are_indexed(store_url, column):
    store = Store(store_url)
    try:
        if store.dialect == "postgresql":
            rows = store.rows("SELECT indexdef AS d FROM pg_indexes WHERE tablename = 'traces'")
        else:
            rows = store.rows(
                "SELECT sql AS d FROM sqlite_master WHERE type = 'index' AND tbl_name = 'traces'"
            )
        assert any(f"({column}" in (r["d"] or "") for r in rows)
    finally:
        store.close()


def test_export_carries_the_variant_of_each_rated_answer(tmp_path):
    import csv
    import io

    from feedback.cli import main as cli
    from feedback.votes import Vote, VoteRecorder

    store = Store(tmp_path / "db.sqlite3")
    store.write_spans(
        [],
        [
            TraceRecord("a" * 32, "T", "q", "a", "u1", "s", "OK", None, 1.0, 2.0, "m", ["variant:b"],
                        {"variant": "b", "experiment": "e"}, variant="b", experiment="e"),
            TraceRecord("c" * 32, "T", "q", "a", "u2", "s", "OK", None, 1.0, 2.0, "m", [], {}),
        ],
    )  # fmt: skip
    VoteRecorder(store).record(trace_id="a" * 32, vote=Vote(1.0), session_id="s", user_id="u1")
    VoteRecorder(store).record(trace_id="c" * 32, vote=Vote(0.0), session_id="s", user_id="u2")
    store.close()
    out = io.StringIO()
    assert cli(["--db", str(tmp_path / "db.sqlite3"), "export", "--format", "csv"], out) == 0
    rows = {r["trace_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert (rows["a" * 32]["variant"], rows["a" * 32]["experiment"]) == ("b", "e")
    assert (rows["c" * 32]["variant"], rows["c" * 32]["experiment"]) == ("", "")
    out = io.StringIO()
    assert cli(["--db", str(tmp_path / "db.sqlite3"), "traces", "--json"], out) == 0
    assert {t["id"]: t["variant"] for t in json.loads(out.getvalue())} == {"a" * 32: "b", "c" * 32: None}
