"""The stand-in keeps the real Langfuse server's rules (tests/langfuse_server.py names the file
each rule comes from). Each test speaks HTTP to it as any client would."""

from __future__ import annotations

import httpx
import pytest

from tests.langfuse_server import BATCH, GENERATIONS, SINGLE, FakeLangfuse, RecordedSpan, create_delay_s

TRACE = "a" * 32


def _score(**extra):
    return {"id": "s1", "name": "user-feedback", "traceId": TRACE, "value": 1, "dataType": "BOOLEAN", **extra}


@pytest.fixture(params=GENERATIONS)
def server(request):
    clock = {"now": 1_780_000_000.0}  # 2026-05-28 20:26 UTC: far from midnight
    with FakeLangfuse(request.param, clock=lambda: clock["now"]) as fake:
        fake.clock = clock
        yield fake


def _post(server, *scores):
    body = list(scores) if server.generation == BATCH else scores[0]
    return httpx.post(f"{server.url}/api/public/scores", json=body, auth=("pk", "sk"))


def test_each_generation_refuses_the_other_form_with_zods_message(server):
    other = _score() if server.generation == BATCH else [_score()]
    response = httpx.post(f"{server.url}/api/public/scores", json=other)
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Invalid request data"
    expected = "array" if server.generation == BATCH else "object"
    assert body["error"][0]["expected"] == expected and body["error"][0]["path"] == []
    assert server.state.rows() == []


def test_valid_score_is_taken_with_the_generations_answer(server):
    response = _post(server, _score())
    assert response.status_code == (202 if server.generation == BATCH else 200)
    assert response.json() == ({"message": "Accepted"} if server.generation == BATCH else {"id": "s1"})


@pytest.mark.parametrize(
    "bad",
    [
        {"value": 0.5},  # BOOLEAN is 0 or 1
        {"value": True},  # a JSON boolean is not a number
        {"sessionId": "sess"},  # traceId and sessionId
        {"traceId": None},  # neither
        {"traceId": None, "sessionId": "s", "observationId": "o"},  # observation without trace
        {"source": "EVAL"},  # reserved for the server's own evaluators
        {"source": "ANNOTATION"},  # needs a configId
        {"name": ""},
        {"dataType": "NUMERIC", "value": "high"},
        {"dataType": "CATEGORICAL", "value": 2},
    ],
)
def test_invalid_scores_are_refused(server, bad):
    response = _post(server, _score(**bad))
    if server.generation == BATCH:
        assert response.status_code == 207
        assert response.json()["rejected"] == 1 and response.json()["errors"][0]["message"]
    else:
        assert response.status_code == 400 and response.json()["message"] == "Invalid request data"
    assert server.state.rows() == []


def test_unknown_fields_are_dropped_and_single_drops_timestamp(server):
    _post(server, _score(timestamp="2026-01-02T03:04:05+00:00", colour="blue"))
    (row,) = server.state.rows()
    assert "colour" not in row
    if server.generation == BATCH:
        assert row["timestamp"].startswith("2026-01-02")
    else:  # filed under the time it was received
        assert row["timestamp"].startswith("2026-05-28")


def test_a_create_lands_late_and_a_delete_runs_at_once(server):
    _post(server, _score())
    assert server.state.scores_now() == {}  # not landed yet
    response = httpx.delete(f"{server.url}/api/public/scores/s1")
    assert response.status_code == 202
    server.clock["now"] += create_delay_s(server.clock["now"]) + 0.1
    # The delete ran before the create landed: the score is there after all.
    assert set(server.state.scores_now()) == {"s1"} and set(server.state.scores) == {"s1"}
    httpx.delete(f"{server.url}/api/public/scores/s1")
    assert server.state.scores == {}


def test_every_delete_is_answered_202(server):
    response = httpx.delete(f"{server.url}/api/public/scores/never-existed")
    assert response.status_code == 202
    assert response.json() == {"message": "Score deletion queued successfully"}


def test_the_create_delay_is_longer_around_midnight_utc():
    assert create_delay_s(1_780_000_000.0) == 5.0  # 20:26 UTC
    assert create_delay_s(1_780_012_800.0 - 60) == 15.0  # 23:59 UTC
    assert create_delay_s(1_780_012_800.0 + 14 * 60) == 15.0  # 00:14 UTC
    assert create_delay_s(1_780_012_800.0 + 16 * 60) == 5.0  # 00:16 UTC


def test_a_score_sent_again_on_a_later_day_is_a_second_row():
    clock = {"now": 1_780_000_000.0}
    with FakeLangfuse(SINGLE, clock=lambda: clock["now"]) as server:
        httpx.post(f"{server.url}/api/public/scores", json=_score())
        clock["now"] += 86400
        httpx.post(f"{server.url}/api/public/scores", json=_score(value=0))
        assert len(server.state.rows()) == 2 and len(server.state.upsert_violations) == 1
        clock["now"] += 20  # both creates have landed
        httpx.delete(f"{server.url}/api/public/scores/s1")  # a delete removes every row of the id
        assert server.state.rows() == []


def _span(**kw) -> RecordedSpan:
    values = {
        "trace_id": TRACE,
        "span_id": "1",
        "parent_id": None,
        "name": "s",
        "attributes": {},
        "status_code": 0,
    }
    values.update(kw)
    return RecordedSpan(**values)


def test_roots_and_usage_follow_the_server():
    root = _span(attributes={"llm.token_count.prompt": 10})
    remote_child = _span(span_id="2", parent_id="1", attributes={"langfuse.internal.is_app_root": True})
    child = _span(
        span_id="3", parent_id="2", attributes={"llm.token_count.prompt": 10, "gen_ai.usage.output_tokens": 3}
    )
    assert [s.is_root for s in (root, remote_child, child)] == [True, True, False]
    with FakeLangfuse() as server:
        server.state.spans.extend([root, remote_child, child])
        assert server.state.trace_usage(TRACE) == {"prompt": 20, "output_tokens": 3}
        assert len(server.roots()) == 2


def test_environment_comes_from_the_span_then_the_resource():
    assert _span(resource={"langfuse.environment": "Staging"}).environment == "staging"
    assert _span(attributes={"deployment.environment": "langfuse-prod"}).environment == "prod"
    assert _span(resource={"deployment.environment.name": "a b"}).environment == "default"
    assert _span().environment == "default"


def test_health_reports_the_generations_version(server):
    body = httpx.get(f"{server.url}/api/public/health").json()
    assert body["status"] == "OK" and body["version"]
