"""The throwaway Phoenix (tests/phoenix_server.py) really starts, takes OTLP spans, serves them and their
trace / span / session annotations over REST, and keeps everything across a stop, a crash and a restart.

These tests talk to the real server only: they pin the REST behaviour the Phoenix destination relies on
(upsert by identifier, 404 before the trace lands, DELETE needing delete_all or a time window).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.phoenix_server import PhoenixServer, port_open, require_phoenix_bin


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[PhoenixServer]:
    """The run's shared Phoenix when tests/conftest.py registers `phoenix_server`, else one of our own."""
    try:
        shared: PhoenixServer | None = request.getfixturevalue("phoenix_server")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        shared.ensure_running()
        yield shared
        shared.ensure_running()  # hand it back running to the tests after us
        return
    with PhoenixServer(require_phoenix_bin()) as own:
        yield own


@dataclass
class Landed:
    project: str
    trace_id: str
    span_id: str
    session_id: str
    user_id: str


def export_turn(server: PhoenixServer, project: str, protocol: str = "http/protobuf", **attrs: str) -> Landed:
    """Export one root CHAIN span carrying OpenInference session.id / user.id; return its ids."""
    session_id, user_id = f"sess-{uuid.uuid4().hex[:12]}", f"user-{uuid.uuid4().hex[:6]}"
    resource = Resource.create(
        {"service.name": "phoenix-fixture-test", "openinference.project.name": project}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(server.span_exporter(project, protocol=protocol)))
    try:
        with provider.get_tracer("tests").start_as_current_span("turn") as span:
            span.set_attributes(
                {
                    "openinference.span.kind": "CHAIN",
                    "session.id": session_id,
                    "user.id": user_id,
                    "input.value": "What is 2 + 2?",
                    "output.value": "4",
                    **attrs,
                }
            )
            context = span.get_span_context()
    finally:
        provider.shutdown()
    return Landed(project, f"{context.trace_id:032x}", f"{context.span_id:016x}", session_id, user_id)


@pytest.fixture(scope="module")
def landed(server: PhoenixServer) -> Landed:
    turn = export_turn(server, server.new_project_name("fixture"))
    server.wait_for_spans(turn.project, 1, trace_id=turn.trace_id)
    return turn


def post(server: PhoenixServer, kind: str, *items: dict, sync: bool = True) -> httpx.Response:
    return server.http.post(f"/v1/{kind}", params={"sync": sync}, json={"data": list(items)})


def delete(server: PhoenixServer, project: str, kind: str, **params: object) -> httpx.Response:
    return server.http.delete(f"/v1/projects/{project}/{kind}", params=params)


def test_serves_rest_otlp_http_and_grpc_on_loopback_without_phoning_home(server: PhoenixServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.otlp_http_endpoint == f"http://127.0.0.1:{server.port}/v1/traces"
    assert server.http.get("/arize_phoenix_version").text.count(".") == 2
    assert server.http.get("/v1/projects").status_code == 200  # auth is off: no API key needed
    assert port_open("127.0.0.1", server.grpc_port)
    assert server.working_dir.joinpath("phoenix.db").is_file()  # SQLite in its own working dir
    log = server.log_text()
    # Nothing tried to reach the internet: no WASM download, no docs MCP server, no telemetry pixel.
    assert "Downloading WASM" not in log and "docs MCP" not in log, log[-3000:]
    assert server.rss_bytes() and server.start_seconds


def test_a_span_reads_back_with_flat_openinference_attributes_and_its_session(
    server: PhoenixServer, landed: Landed
) -> None:
    [span] = server.spans(landed.project, trace_id=landed.trace_id)
    assert span["context"] == {"trace_id": landed.trace_id, "span_id": landed.span_id}
    assert span["name"] == "turn" and span["span_kind"] == "CHAIN" and span["parent_id"] is None
    assert span["attributes"]["session.id"] == landed.session_id
    assert span["attributes"]["user.id"] == landed.user_id
    assert span["attributes"]["output.value"] == "4"
    # The filters the destination's tests use: roots only, by attribute.
    assert server.spans(landed.project, parent_id="null") == [span]
    assert server.spans(landed.project, attribute=f"session.id:{landed.session_id}") == [span]
    [session] = server.sessions(landed.project)
    assert session["session_id"] == landed.session_id
    assert [trace["trace_id"] for trace in session["traces"]] == [landed.trace_id]


def test_grpc_and_the_resource_attribute_pick_the_project(server: PhoenixServer) -> None:
    project = server.new_project_name("grpc")
    turn = export_turn(server, project, protocol="grpc")
    [span] = server.wait_for_spans(project, 1)
    assert span["context"]["trace_id"] == turn.trace_id


def test_trace_annotation_upserts_by_identifier_and_deletes(server: PhoenixServer, landed: Landed) -> None:
    vote = {
        "trace_id": landed.trace_id,
        "name": "user-feedback",
        "annotator_kind": "HUMAN",
        "identifier": "vote-1",
        "result": {"label": "like", "score": 1},
    }
    first = post(server, "trace_annotations", vote)
    assert first.status_code == 200, first.text
    [created] = first.json()["data"]
    changed = {**vote, "result": {"label": "dislike", "score": 0, "explanation": "wrong sum"}}
    second = post(server, "trace_annotations", changed)
    assert second.json()["data"] == [created]  # same row: upserted on (name, trace, identifier)

    [row] = server.trace_annotations(landed.project, [landed.trace_id])
    assert row["id"] == created["id"] and row["identifier"] == "vote-1" and row["source"] == "API"
    assert row["result"] == {"label": "dislike", "score": 0.0, "explanation": "wrong sum"}
    assert row["annotator_kind"] == "HUMAN" and row["updated_at"] >= row["created_at"]

    # Unbounded deletes are refused unless acknowledged: identifier alone is not enough.
    refused = delete(server, landed.project, "trace_annotations", identifier="vote-1")
    assert refused.status_code == 422, refused.text
    gone = delete(server, landed.project, "trace_annotations", identifier="vote-1", delete_all="true")
    assert gone.status_code == 204, gone.text
    assert server.trace_annotations(landed.project, [landed.trace_id]) == []
    again = delete(server, landed.project, "trace_annotations", identifier="vote-1", delete_all="true")
    assert again.status_code == 204  # idempotent


def test_span_and_session_annotations_upsert_and_delete(server: PhoenixServer, landed: Landed) -> None:
    judge = {"span_id": landed.span_id, "name": "correct", "annotator_kind": "LLM", "identifier": "judge-1"}
    assert post(server, "span_annotations", {**judge, "result": {"label": "yes", "score": 1}}).is_success
    assert post(server, "span_annotations", {**judge, "result": {"label": "no", "score": 0}}).is_success
    [span_row] = server.span_annotations(landed.project, [landed.span_id])
    assert (span_row["span_id"], span_row["result"]["label"]) == (landed.span_id, "no")

    convo = {"session_id": landed.session_id, "name": "conversation", "annotator_kind": "CODE"}
    assert post(server, "session_annotations", {**convo, "result": {"score": 0.5}}).is_success
    assert post(server, "session_annotations", {**convo, "result": {"score": 0.75}}).is_success
    [session_row] = server.session_annotations(landed.project, [landed.session_id])
    assert session_row["identifier"] == ""  # no identifier: the key is (name, session, "")
    assert (session_row["session_id"], session_row["result"]["score"]) == (landed.session_id, 0.75)

    by_identifier = delete(
        server, landed.project, "span_annotations", identifier="judge-1", delete_all="true"
    )
    by_name = delete(server, landed.project, "session_annotations", name="conversation", delete_all="true")
    assert (by_identifier.status_code, by_name.status_code) == (204, 204)
    assert server.span_annotations(landed.project, [landed.span_id]) == []
    assert server.session_annotations(landed.project, [landed.session_id]) == []


def test_an_annotation_before_its_trace_lands_is_404_when_sync_and_queued_when_async(
    server: PhoenixServer, landed: Landed
) -> None:
    unknown = uuid.uuid4().hex
    early = {"trace_id": unknown, "name": "user-feedback", "annotator_kind": "HUMAN", "result": {"score": 1}}
    refused = post(server, "trace_annotations", early)
    assert refused.status_code == 404 and unknown in refused.text
    # Async: accepted with no ids, written by Phoenix's queue later (it retries a missing trace every
    # 10 s for 10 min, in memory only); here the trace exists, so it lands within a moment.
    late = {**early, "trace_id": landed.trace_id, "identifier": "async"}
    queued = post(server, "trace_annotations", late, sync=False)
    assert queued.status_code == 200 and queued.json() == {"data": []}
    server.wait_for(
        lambda: server.trace_annotations(landed.project, [landed.trace_id], identifier=["async"]),
        10,
        "the async annotation",
    )
    delete(server, landed.project, "trace_annotations", identifier="async", delete_all="true")


def test_stop_crash_and_restart_keep_spans_and_annotations_on_the_same_ports(server: PhoenixServer) -> None:
    turn = export_turn(server, server.new_project_name("restart"))
    server.wait_for_spans(turn.project, 1)
    vote = {"trace_id": turn.trace_id, "name": "user-feedback", "annotator_kind": "HUMAN", "identifier": "v"}
    assert post(server, "trace_annotations", {**vote, "result": {"label": "like", "score": 1}}).is_success
    ports, db = (server.port, server.grpc_port), server.working_dir / "phoenix.db"

    server.stop()
    assert not server.running
    assert not port_open("127.0.0.1", server.port) and not port_open("127.0.0.1", server.grpc_port)
    with pytest.raises(httpx.ConnectError):
        server.http.get("/readyz")
    began = time.monotonic()
    server.start()
    restart_s = time.monotonic() - began
    assert (server.port, server.grpc_port) == ports and db.is_file()
    assert [s["context"]["trace_id"] for s in server.spans(turn.project)] == [turn.trace_id]
    [row] = server.trace_annotations(turn.project, [turn.trace_id])
    assert row["result"]["label"] == "like"

    # A crash (SIGKILL) loses nothing that a sync POST had confirmed.
    assert post(server, "trace_annotations", {**vote, "result": {"label": "dislike", "score": 0}}).is_success
    server.kill()
    server.start()
    [row] = server.trace_annotations(turn.project, [turn.trace_id])
    assert row["result"]["label"] == "dislike"
    # The same OTLP endpoint takes spans again after the restart.
    later = export_turn(server, turn.project)
    server.wait_for_spans(turn.project, 2, trace_id=[turn.trace_id, later.trace_id])
    rss_mb = (server.rss_bytes() or 0) / 2**20
    print(
        f"phoenix first start {server.start_seconds[0]:.1f} s, restart {restart_s:.1f} s, RSS {rss_mb:.0f} MB"
    )


def test_without_phoenix_it_skips_unless_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHOENIX_BIN", str(tmp_path / "no-such-phoenix"))
    monkeypatch.delenv("REQUIRE_PHOENIX", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is not an executable file"):
        require_phoenix_bin()
    monkeypatch.setenv("REQUIRE_PHOENIX", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_PHOENIX is set but PHOENIX_BIN="):
        require_phoenix_bin()
    # Unset PHOENIX_BIN: the newest complete venv under $XDG_CACHE_HOME/smolagents-chat is used.
    monkeypatch.delenv("PHOENIX_BIN")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    venv = tmp_path / "smolagents-chat" / "phoenix-20.26.1"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "phoenix").write_text("#!/bin/sh\n")
    (venv / "bin" / "phoenix").chmod(0o755)
    with pytest.raises(pytest.fail.Exception, match="no complete venv"):
        require_phoenix_bin()  # no .installed marker: an interrupted install does not count
    (venv / ".installed").write_text("arize-phoenix==20.26.1\n")
    assert require_phoenix_bin() == venv / "bin" / "phoenix"
