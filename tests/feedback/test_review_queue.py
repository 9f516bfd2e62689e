"""The review queue in the store (feedback.review_queue), on SQLite and on a real Postgres: items
unique per (trace, queue), leases that two reviewers never share (also when they claim at the
same moment, and across queues of one trace), expired leases, skips, progress per queue, and a
saved review: labels as ANNOTATION scores by "reviewer", the corrected answer, every item of the
trace done, all or nothing."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import httpx
import pytest

from feedback.review_queue import (
    ANNOTATION,
    DONE,
    LEASED,
    MANUAL,
    PENDING,
    SKIPPED,
    Label,
    NewItem,
    ReviewError,
    ReviewQueue,
    label_score_id,
)
from feedback.store import BY_REVIEWER, Store
from tests.dashboard.day_one import judge, turn, vote
from tests.helpers import wait_for
from tests.langfuse_server import GENERATIONS

T0 = 1_760_000_000.0


@pytest.fixture
def store(store_url: str):
    store = Store(store_url)
    yield store
    store.close()


def _turns(store: Store, n: int) -> list[str]:
    return [turn(store, f"t{i}", T0 + i) for i in range(n)]


def _queue(store: Store, traces: list[str], queue: str = "dislikes", start: float = T0) -> ReviewQueue:
    q = ReviewQueue(store)
    for n, trace_id in enumerate(traces):
        q.add([NewItem(trace_id, queue, f"reason {n}")], now=start + n)
    return q


def test_an_item_is_unique_per_trace_and_queue(store):
    a, b = _turns(store, 2)
    q = ReviewQueue(store)
    assert q.add([NewItem(a, "dislikes", "disliked"), NewItem(a, "dislikes", "again")]) == 1
    assert q.add([NewItem(a, "dislikes", "and again")]) == 0
    assert q.add([NewItem(a, "low-helpfulness", "judge 0.1"), NewItem(b, MANUAL, "by hand")]) == 2
    assert sorted(i.queue for i in q.items_of(a)) == ["dislikes", "low-helpfulness"]
    assert q.items_of(a)[0].reason == "disliked"  # the first reason stays


def test_claims_hand_out_the_oldest_item_and_a_reviewer_gets_theirs_back(store):
    traces = _turns(store, 3)
    q = _queue(store, traces)
    first = q.claim("ann", now=T0 + 100)
    assert first is not None and first.trace_id == traces[0] and first.state == LEASED
    assert first.lease_owner == "ann" and first.lease_until == pytest.approx(T0 + 100 + 1800)
    # A reload: the same item, its lease renewed.
    again = q.claim("ann", now=T0 + 200)
    assert again is not None and again.id == first.id and again.lease_until == pytest.approx(T0 + 2000)
    other = q.claim("bob", now=T0 + 200)
    assert other is not None and other.trace_id == traces[1]
    assert q.claim("cy", now=T0 + 200).trace_id == traces[2]
    assert q.claim("dee", now=T0 + 200) is None  # all three held
    assert q.claim("ann", queue="other", now=T0 + 200) is None


def test_an_expired_lease_returns_the_item_and_the_late_review_is_still_saved(store):
    (trace_id,) = _turns(store, 1)
    q = _queue(store, [trace_id])
    held = q.claim("ann", lease_s=60, now=T0 + 10)
    assert q.claim("bob", now=T0 + 69) is None  # still ann's
    taken = q.claim("bob", now=T0 + 71)  # ann's lease ran out
    assert taken is not None and taken.id == held.id and taken.lease_owner == "bob"
    # ann comes back and saves: her work is kept, and she is told bob has it now.
    saved = q.save(held.id, "ann", [Label("safety", "BOOLEAN", 1.0)], now=T0 + 72)
    assert saved.taken_by == "bob" and saved.items_done == 1
    assert q.get(held.id).state == DONE and q.get(held.id).finished_by == "ann"


def test_skip_and_release(store):
    a, b = _turns(store, 2)
    q = _queue(store, [a, b])
    item = q.claim("ann", now=T0 + 10)
    assert not q.skip(item.id, "bob", now=T0 + 11)  # bob does not hold it
    assert q.skip(item.id, "ann", now=T0 + 11)
    assert q.get(item.id).state == SKIPPED
    nxt = q.claim("ann", now=T0 + 12)
    assert nxt.trace_id == b
    assert q.release(nxt.id, "ann")
    assert q.get(nxt.id).state == PENDING and q.get(nxt.id).lease_owner is None
    assert q.claim("bob", now=T0 + 13).id == nxt.id
    assert q.claim("ann", now=T0 + 13) is None  # the skipped one does not come back


def test_two_queues_of_one_trace_are_never_held_by_two_reviewers(store):
    (trace_id,) = _turns(store, 1)
    q = ReviewQueue(store)
    q.add([NewItem(trace_id, "dislikes", "disliked")], now=T0)
    q.add([NewItem(trace_id, "calibration", "random sample", calibration=True, sample_rate=0.05)], now=T0 + 1)
    ann = q.claim("ann", queue="dislikes", now=T0 + 10)
    assert ann is not None
    assert q.claim("bob", queue="calibration", now=T0 + 10) is None
    assert q.claim("bob", now=T0 + 10) is None
    # ann's review of the trace finishes both items.
    q.save(ann.id, "ann", [Label("helpfulness", "NUMERIC", 0.5)], now=T0 + 20)
    assert {i.state for i in q.items_of(trace_id)} == {DONE}
    assert q.claim("bob", now=T0 + 30) is None


def test_concurrent_claims_never_return_the_same_item(store):
    traces = _turns(store, 24)
    q = _queue(store, traces)
    reviewers = [f"reviewer-{n}" for n in range(6)]
    got: dict[str, list[str]] = {r: [] for r in reviewers}
    errors: list[BaseException] = []
    start = threading.Barrier(len(reviewers))

    def work(reviewer: str) -> None:
        try:
            start.wait()
            while True:
                item = q.claim(reviewer)
                if item is None:
                    return
                got[reviewer].append(item.id)
                # Half are labelled, half skipped: either way the item leaves the queue.
                if len(got[reviewer]) % 2:
                    q.save(item.id, reviewer, [Label("safety", "BOOLEAN", 1.0)])
                else:
                    assert q.skip(item.id, reviewer)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    claimed = Counter(i for ids in got.values() for i in ids)
    assert len(claimed) == 24 and max(claimed.values()) == 1, claimed.most_common(3)
    assert sum(1 for ids in got.values() if ids) >= 2  # the work really was shared
    assert {i.state for i in q.items(limit=100)} <= {DONE, SKIPPED}


def test_simultaneous_claims_hold_one_item_each(store):
    """Every reviewer claims at the same moment and keeps what they got: no item twice."""
    traces = _turns(store, 5)
    q = _queue(store, traces)
    reviewers = [f"r{n}" for n in range(8)]
    results: dict[str, str | None] = {}
    barrier = threading.Barrier(len(reviewers))

    def work(reviewer: str) -> None:
        barrier.wait()
        item = q.claim(reviewer)
        results[reviewer] = item.id if item else None

    threads = [threading.Thread(target=work, args=(r,)) for r in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    held = [i for i in results.values() if i is not None]
    assert len(held) == 5 and len(set(held)) == 5
    assert list(results.values()).count(None) == 3


def test_saving_a_review_writes_annotation_labels_and_the_corrected_answer(store):
    (trace_id,) = _turns(store, 1)
    vote(store, trace_id, 0.0, reason="Incorrect")
    judge(store, trace_id, "helpfulness", 0.9, reasoning="Fine.")
    q = ReviewQueue(store)
    q.add(
        [NewItem(trace_id, "judge-vs-user", "helpfulness 0.9 vs a dislike"), NewItem(trace_id, MANUAL, "x")]
    )
    item = q.claim("ann")
    categories = ("wrong-answer", "incomplete", "other")
    saved = q.save(
        item.id,
        "ann",
        [
            Label("helpfulness", "NUMERIC", 0.2),
            Label("safety", "BOOLEAN", 1.0),
            Label("dislike-reason", "CATEGORICAL", string_value="wrong-answer", categories=categories),
        ],
        corrected_answer="  The answer is 4.  ",
        note="It said 5.",
    )
    assert saved.items_done == 2 and saved.corrected_answer == "The answer is 4."
    labels = {s.name: s for s in q.labels_of(trace_id)}
    assert set(labels) == {"helpfulness", "safety", "dislike-reason"}
    for score in labels.values():
        assert score.source == ANNOTATION and score.scored_by == BY_REVIEWER and score.by == BY_REVIEWER
        assert score.id == label_score_id(trace_id, score.name)
        assert score.comment == "It said 5." and score.user_id == "ann"  # the trace's user
        assert '"reviewer": "ann"' in score.metadata
    assert labels["helpfulness"].value == 0.2 and labels["safety"].data_type == "BOOLEAN"
    assert labels["dislike-reason"].string_value == "wrong-answer" and labels["dislike-reason"].value is None
    assert '"categories"' in labels["dislike-reason"].metadata
    review = q.review_of(trace_id)
    assert review["reviewer"] == "ann" and review["corrected_answer"] == "The answer is 4."
    assert review["note"] == "It said 5." and review["labels"] == 3
    # The judge's own score is untouched and stays apart from the label of the same name.
    judged = store.get_score(f"helpfulness-{trace_id}")
    assert judged.value == 0.9 and judged.source == "EVAL"
    pairs = q.label_pairs("helpfulness")
    assert [(p["judge"], p["label"]) for p in pairs] == [(0.9, 0.2)]
    # A second review overwrites the labels (same ids, new versions) and keeps the correction.
    again = q.save(item.id, "bob", [Label("helpfulness", "NUMERIC", 0.0)])
    assert again.labels[0].id == labels["helpfulness"].id and again.labels[0].version == 2
    assert q.review_of(trace_id)["corrected_answer"] == "The answer is 4."
    assert q.review_of(trace_id)["reviewer"] == "bob"


@pytest.mark.parametrize(
    "label, message",
    [
        (Label("safety", "BOOLEAN", 0.5), "true (1) or false (0)"),
        (Label("helpfulness", "NUMERIC", 1.5), "from 0 to 1"),
        (Label("helpfulness", "NUMERIC", None), "needs a number"),
        (Label("reason", "CATEGORICAL", string_value="nope", categories=("a", "b")), "not a category"),
        (Label("user-feedback", "BOOLEAN", 1.0), "users' own rating"),
    ],
)
def test_a_wrong_label_is_refused_and_nothing_is_written(store, label, message):
    (trace_id,) = _turns(store, 1)
    q = _queue(store, [trace_id])
    item = q.claim("ann")
    with pytest.raises(ReviewError, match=re.escape(message)):
        q.save(item.id, "ann", [Label("safety", "BOOLEAN", 1.0), label])
    assert q.labels_of(trace_id) == [] and q.review_of(trace_id) is None
    assert q.get(item.id).state == LEASED


def test_nothing_to_save_and_unknown_items_are_clear_errors(store):
    (trace_id,) = _turns(store, 1)
    q = _queue(store, [trace_id])
    item = q.claim("ann")
    with pytest.raises(ReviewError, match="Nothing to save"):
        q.save(item.id, "ann", [], corrected_answer="   ")
    with pytest.raises(ReviewError, match="not in the queue"):
        q.save("no-such-item", "ann", [Label("safety", "BOOLEAN", 1.0)])
    # A corrected answer alone is a review.
    assert q.save(item.id, "ann", [], corrected_answer="Paris.").corrected_answer == "Paris."


def test_progress_per_queue_and_a_reviewed_trace_entering_a_queue_is_done(store):
    traces = _turns(store, 4)
    q = ReviewQueue(store)
    q.add([NewItem(t, "dislikes", "d") for t in traces[:3]], now=T0)
    q.add([NewItem(traces[3], "calibration", "c", calibration=True, sample_rate=0.1)], now=T0)
    first = q.claim("ann", queue="dislikes", now=T0 + 1)
    q.save(first.id, "ann", [Label("safety", "BOOLEAN", 0.0)], now=T0 + 2)
    q.skip(q.claim("ann", queue="dislikes", now=T0 + 3).id, "ann", now=T0 + 3)
    q.claim("bob", queue="dislikes", now=T0 + 4)
    progress = {p["queue"]: p for p in q.progress(now=T0 + 5)}
    assert progress["dislikes"] == {
        "queue": "dislikes", "total": 3, "done": 1, "skipped": 1, "in_review": 1, "to_do": 1, "calibration": 0,
    }  # fmt: skip
    assert progress["calibration"]["calibration"] == 1 and progress["calibration"]["to_do"] == 1
    # The reviewed trace is put in another queue later: it is done there at once.
    q.add([NewItem(first.trace_id, "low-helpfulness", "judge 0.1")], now=T0 + 6)
    assert {p["queue"]: p["done"] for p in q.progress(now=T0 + 7)}["low-helpfulness"] == 1


def test_withdraw_takes_out_pending_items_only(store):
    a, b = _turns(store, 2)
    q = _queue(store, [a, b])
    held = q.claim("ann")
    assert q.withdraw(held.trace_id, "dislikes") == 0  # being reviewed: it stays
    assert q.withdraw(b, "dislikes") == 1
    assert [i.trace_id for i in q.items()] == [a]


def test_the_rules_bookkeeping_marks_traces_and_score_versions_seen(store):
    (trace_id,) = _turns(store, 1)
    q = ReviewQueue(store)
    assert [t["id"] for t in q.unseen_traces()] == [trace_id]
    score = vote(store, trace_id, 1.0)
    assert [(s["id"], s["version"]) for s in q.unseen_scores()] == [(score, 1)]
    added = q.seen([trace_id], [(score, 1)], add=[NewItem(trace_id, "calibration", "drawn", True, 0.2)])
    assert added == 1 and q.unseen_traces() == [] and q.unseen_scores() == []
    vote(store, trace_id, 0.0)  # a changed vote is a new version to look at
    assert [s["version"] for s in q.unseen_scores()] == [2]
    item = q.items()[0]
    assert item.calibration and item.sample_rate == 0.2


def test_the_review_tables_do_not_touch_the_dashboard_cache(store):
    """Marking a trace seen is bookkeeping: the day's cached dashboard figures stay valid."""
    (trace_id,) = _turns(store, 1)
    before = store.rows("SELECT day, version FROM dashboard_changes")
    ReviewQueue(store).seen([trace_id])
    assert store.rows("SELECT day, version FROM dashboard_changes") == before
    assert store.row("SELECT review_seen FROM traces WHERE id = :t", {"t": trace_id})["review_seen"] == 1


def test_calibration_pairs_use_only_the_random_sample(store):
    a, b = _turns(store, 2)
    for t, v in ((a, 0.9), (b, 0.8)):
        judge(store, t, "helpfulness", v)
    q = ReviewQueue(store)
    q.add(
        [NewItem(a, "calibration", "drawn", calibration=True, sample_rate=0.05), NewItem(b, "dislikes", "d")]
    )
    for reviewer in ("ann", "bob"):
        item = q.claim(reviewer)
        q.save(item.id, reviewer, [Label("helpfulness", "NUMERIC", 0.5)])
    pairs = q.calibration_pairs("helpfulness")
    assert [(p["trace_id"], p["judge"], p["label"], p["sample_rate"]) for p in pairs] == [(a, 0.9, 0.5, 0.05)]
    assert len(q.label_pairs("helpfulness")) == 2


def test_claim_answers_fast_when_the_queue_is_empty(store):
    q = ReviewQueue(store)
    started = time.perf_counter()
    for _ in range(50):
        assert q.claim("ann") is None
    assert (time.perf_counter() - started) / 50 < 0.05


# ----- labels in Langfuse ------------------------------------------------------------------------


@pytest.fixture(params=GENERATIONS)
def langfuse_generation(request: pytest.FixtureRequest) -> str:
    """Both server generations (one score object per call, and lists)."""
    return request.param


def test_labels_reach_langfuse_as_annotation_scores_with_a_fitting_config(
    make_settings, make_runtime, fake_langfuse
):
    runtime = make_runtime(make_settings(fake_langfuse, LANGFUSE_RETRY_MAX_S="0.3"))
    store = runtime.feedback.store
    # A config made earlier in the project (by hand, say) that fits is reused, never duplicated.
    existing = httpx.post(
        f"{fake_langfuse.url}/api/public/score-configs",
        json={"name": "safety", "dataType": "BOOLEAN"},
        auth=("pk", "sk"),
        timeout=5,
    ).json()
    a, b = _turns(store, 2)
    q = ReviewQueue(store)
    q.add([NewItem(a, "dislikes", "d"), NewItem(b, "dislikes", "d")])
    categories = ("wrong-answer", "incomplete", "other")
    for reviewer in ("ann", "bob"):
        item = q.claim(reviewer)
        q.save(
            item.id,
            reviewer,
            [
                Label("helpfulness", "NUMERIC", 0.3),
                Label("safety", "BOOLEAN", 1.0),
                Label("dislike-reason", "CATEGORICAL", string_value="incomplete", categories=categories),
            ],
            note="Checked by hand.",
        )
    runtime.feedback.outbox.notify()
    ids = {label_score_id(t, n) for t in (a, b) for n in ("helpfulness", "safety", "dislike-reason")}
    wait_for(lambda: ids <= set(fake_langfuse.state.scores), 20)
    state = fake_langfuse.state
    # Nothing refused but the list a one-object server answers 400 (its form is then used).
    assert all("expected object" in r["issues"][0]["message"] for r in state.score_refusals)
    assert state.dropped == []
    configs = {c["name"]: c for c in state.score_configs.values()}
    assert len(state.score_configs) == 3  # one per name: the existing one and two made
    assert configs["safety"]["id"] == existing["id"]
    assert (configs["helpfulness"]["dataType"], configs["helpfulness"]["minValue"], configs["helpfulness"]["maxValue"]) == (
        "NUMERIC", 0, 1,
    )  # fmt: skip
    assert [c["label"] for c in configs["dislike-reason"]["categories"]] == list(categories)
    for score_id in ids:
        row = state.scores[score_id]
        assert row["source"] == "ANNOTATION" and row["configId"] == configs[row["name"]]["id"]
        assert row["comment"] == "Checked by hand."
        assert row["metadata"]["source"] == "ANNOTATION" and row["metadata"]["reviewer"] in ("ann", "bob")
    assert {state.scores[label_score_id(a, "dislike-reason")]["value"]} == {"incomplete"}
    assert all(s.delivery == "delivered" for s in store.judge_scores())


def test_a_label_whose_name_no_config_can_take_goes_as_an_api_score(
    make_settings, make_runtime, fake_langfuse, caplog
):
    runtime = make_runtime(make_settings(fake_langfuse, LANGFUSE_RETRY_MAX_S="0.3"))
    store = runtime.feedback.store
    (a,) = _turns(store, 1)
    q = ReviewQueue(store)
    q.add([NewItem(a, MANUAL, "by hand")])
    name = "a-very-long-evaluator-name-beyond-the-limit"  # 43 characters: configs take 35
    q.save(q.claim("ann").id, "ann", [Label(name, "BOOLEAN", 0.0)])
    runtime.feedback.outbox.notify()
    wait_for(lambda: label_score_id(a, name) in fake_langfuse.state.scores, 20)
    row = fake_langfuse.state.scores[label_score_id(a, name)]
    assert row.get("source", "API") == "API" and "configId" not in row
    assert row["metadata"]["source"] == "ANNOTATION"
    assert "go to Langfuse as API scores" in caplog.text
