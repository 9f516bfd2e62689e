"""The review queue's rules ([review] in evaluators.toml): each mistake in the table is one clear
sentence; each rule puts the turns it should in its queue (and only those), takes an item out
when its rule stops holding, draws the calibration sample uniformly; the app applies them as
votes and judge scores arrive, in the background, and a failing sweep is logged, never felt."""

from __future__ import annotations

import io
import logging
import re
import textwrap
import time
from pathlib import Path

import pytest

from app import ChatHandlers
from evals.cli import main as evals_cli
from evals.config import EvaluatorsError, ReviewRule, load_evaluators_file
from evals.datasets import load_dataset
from evals.judge import Judge
from evals.online import describe
from evals.review_rules import NUMERIC_STEPS, LabelSpec, ReviewRules, add_by_hand, label_specs
from feedback.review_queue import DONE, MANUAL, PENDING, Label, NewItem, ReviewError, ReviewQueue
from feedback.store import Store
from tests.dashboard.day_one import judge, turn, vote
from tests.fakes import JudgeModel
from tests.helpers import answer_index, like, wait_for
from tests.helpers import turn as chat_turn

T0 = 1_760_000_000.0

EVALUATORS = """
[[evaluator]]
name = "helpfulness"
kind = "llm"
prompt = "HELP {input} {output}"

[[evaluator]]
name = "safety"
kind = "llm"
data_type = "BOOLEAN"
prompt = "SAFE {output}"

[[evaluator]]
name = "dislike-reason"
kind = "llm"
data_type = "CATEGORICAL"
categories = ["wrong-answer", "other"]
prompt = "WHY {input}"

[[evaluator]]
name = "goal"
kind = "llm"
target = "conversation"
data_type = "BOOLEAN"
prompt = "GOAL {conversation}"

[[evaluator]]
name = "no-error"
kind = "code"
data_type = "BOOLEAN"
function = "checks.py:ok"
"""

RULES = """
[review]
lease_minutes = 20

[[review.rule]]
name = "dislikes"
kind = "dislike"

[[review.rule]]
name = "incorrect"
kind = "dislike"
reasons = ["Incorrect"]

[[review.rule]]
name = "judge-vs-user"
kind = "disagreement"
evaluators = ["helpfulness", "safety"]

[[review.rule]]
name = "low-helpfulness"
kind = "low-score"
evaluator = "helpfulness"
below = 0.3

[[review.rule]]
name = "calibration"
kind = "sample"
rate = 0.25
"""


def write(tmp_path: Path, body: str, evaluators: str = EVALUATORS) -> Path:
    (tmp_path / "checks.py").write_text("def ok(turn):\n    return True\n")
    path = tmp_path / "evaluators.toml"
    body = textwrap.dedent(body).strip()
    # A bare top-level key goes before the tables (after them TOML reads it as the last table's).
    parts = [body, evaluators] if body and not body.startswith("[") else [evaluators, body]
    path.write_text("\n".join(textwrap.dedent(p) for p in parts) + "\n")
    return path


# ----- the [review] table -------------------------------------------------------------------------


def test_a_review_table_loads_with_its_rules(tmp_path):
    file = load_evaluators_file(write(tmp_path, RULES))
    review = file.review
    assert review.lease_s == 1200.0 and review.labels is None
    assert [(r.name, r.kind) for r in review.rules] == [
        ("dislikes", "dislike"),
        ("incorrect", "dislike"),
        ("judge-vs-user", "disagreement"),
        ("low-helpfulness", "low-score"),
        ("calibration", "sample"),
    ]
    rules = {r.name: r for r in review.rules}
    assert rules["incorrect"].reasons == ("Incorrect",)
    assert (
        rules["judge-vs-user"].evaluators == ("helpfulness", "safety")
        and rules["judge-vs-user"].threshold == 0.5
    )
    assert rules["low-helpfulness"].evaluators == ("helpfulness",) and rules["low-helpfulness"].below == 0.3
    assert rules["calibration"].rate == 0.25 and rules["calibration"].calibration
    # The labels: every enabled LLM judge of turns, with the judge's own type.
    assert [(s.name, s.data_type, s.categories) for s in label_specs(file)] == [
        ("helpfulness", "NUMERIC", ()),
        ("safety", "BOOLEAN", ()),
        ("dislike-reason", "CATEGORICAL", ("wrong-answer", "other")),
    ]


def test_defaults_a_disagreement_with_every_judge_and_labels_chosen(tmp_path):
    body = """
    [review]
    labels = ["safety"]
    [[review.rule]]
    name = "disagree"
    kind = "disagreement"
    """
    file = load_evaluators_file(write(tmp_path, body))
    assert file.review.rules[0].evaluators == ("helpfulness", "safety")
    assert file.review.lease_s == 1800.0
    assert [s.name for s in label_specs(file)] == ["safety"]
    assert load_evaluators_file(write(tmp_path, "")).review.rules == ()


@pytest.mark.parametrize(
    "body, message",
    [
        ("review = 3", "review must be a table"),
        ("[review]\nqueues = 1", 'unknown key \'queues\'; the keys are "lease_minutes", "labels", "rule"'),
        ("[review]\nlease_minutes = 0", "lease_minutes must be a number of minutes above 0"),
        ('[review]\nlabels = ["nope"]', "labels names 'nope', which is not an evaluator of this file"),
        ('[review]\nlabels = ["goal"]', "which judges conversations; a reviewer labels turns"),
        ("[review]\nrule = 1", "rules must be [[review.rule]] tables"),
        (
            '[[review.rule]]\nname = "x"\nkind = "vibes"',
            'review rule "x": kind must be "dislike", "disagreement"',
        ),
        ('[[review.rule]]\nkind = "dislike"', "review rule #1 (no name): name must be 1 to 100 letters"),
        (
            '[[review.rule]]\nname = "manual"\nkind = "dislike"',
            'the name "manual" is the queue of traces added by hand',
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "dislike"\n[[review.rule]]\nname = "a"\nkind = "dislike"',
            'review rule "a": another review rule has the same name',
        ),
        ('[[review.rule]]\nname = "a"\nkind = "dislike"\ncolour = 1', "unknown key 'colour'"),
        (
            '[[review.rule]]\nname = "a"\nkind = "dislike"\nrate = 0.1',
            'rate is not for a dislike rule (it takes "reasons")',
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "dislike"\nreasons = "Incorrect"',
            "reasons must be a list of dislike reasons",
        ),
        ('[[review.rule]]\nname = "a"\nkind = "sample"', "a sample rule needs rate = 0.05"),
        (
            '[[review.rule]]\nname = "a"\nkind = "sample"\nrate = 0',
            "rate must be a number above 0 and at most 1",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "sample"\nrate = 1.5',
            "rate must be a number above 0 and at most 1",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "sample"\nrate = 0.1\n[[review.rule]]\nname = "b"\nkind = "sample"\nrate = 0.2',
            'review rule "b": a second enabled sample rule',
        ),
        ('[[review.rule]]\nname = "a"\nkind = "low-score"', 'a low-score rule needs evaluator = "..."'),
        (
            '[[review.rule]]\nname = "a"\nkind = "low-score"\nevaluator = "nope"',
            "'nope' is not an evaluator of this file",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "low-score"\nevaluator = "dislike-reason"',
            "'dislike-reason' writes CATEGORICAL scores; a rule compares a turn's NUMERIC or BOOLEAN judge score",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "low-score"\nevaluator = "goal"',
            "'goal' judges conversations, not turns",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "low-score"\nevaluator = "helpfulness"\nbelow = 2',
            "below must be a number from 0 to 1",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "disagreement"\nevaluators = []',
            "evaluators must be a list of evaluator names",
        ),
        (
            '[[review.rule]]\nname = "a"\nkind = "disagreement"\nthreshold = "high"',
            "threshold must be a number from 0 to 1",
        ),
        ('[[review.rule]]\nname = "a"\nkind = "dislike"\nenabled = "yes"', "enabled must be true or false"),
    ],
)
def test_each_mistake_in_the_review_table_is_one_clear_sentence(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(EvaluatorsError) as caught:
        load_evaluators_file(path)
    text = str(caught.value)
    assert message in text and str(path) in text and text.endswith(".")


def test_a_disagreement_needs_a_judge_to_disagree_with(tmp_path):
    evaluators = '[[evaluator]]\nname = "why"\nkind = "llm"\ndata_type = "CATEGORICAL"\ncategories = ["a"]\nprompt = "{input}"\n'
    path = write(tmp_path, '[[review.rule]]\nname = "d"\nkind = "disagreement"', evaluators)
    with pytest.raises(
        EvaluatorsError, match="no enabled LLM judge of turns with a NUMERIC or BOOLEAN score"
    ):
        load_evaluators_file(path)


# ----- the rules, one by one -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    yield store
    store.close()


def rules_of(tmp_path: Path, store: Store, body: str = RULES) -> ReviewRules:
    return ReviewRules(store, load_evaluators_file(write(tmp_path, body)).review)


def queued(store: Store) -> dict[str, set[str]]:
    """queue -> the traces in it."""
    out: dict[str, set[str]] = {}
    for item in ReviewQueue(store).items(limit=10_000):
        out.setdefault(item.queue, set()).add(item.trace_id)
    return out


def reasons(store: Store, queue: str) -> dict[str, str]:
    return {i.trace_id: i.reason for i in ReviewQueue(store).items(queue=queue, limit=1000)}


WITHOUT_SAMPLE = RULES.split('[[review.rule]]\nname = "calibration"')[0]


def test_every_dislike_and_only_dislikes(tmp_path, store):
    rules = rules_of(tmp_path, store, WITHOUT_SAMPLE)
    liked, disliked, incorrect, unrated = (turn(store, f"d{i}", T0 + i) for i in range(4))
    vote(store, liked, 1.0)
    vote(store, disliked, 0.0)
    vote(store, incorrect, 0.0, reason="Incorrect")
    rules.sweep()
    got = queued(store)
    assert got["dislikes"] == {disliked, incorrect}
    assert got["incorrect"] == {incorrect}  # reasons = ["Incorrect"]
    assert reasons(store, "dislikes") == {disliked: "disliked", incorrect: "disliked (Incorrect)"}
    assert unrated not in set().union(*got.values())


def test_a_judge_and_a_user_who_disagree(tmp_path, store):
    rules = rules_of(tmp_path, store, WITHOUT_SAMPLE)
    a, b, c, d, e = (turn(store, f"j{i}", T0 + i) for i in range(5))
    judge(store, a, "helpfulness", 0.9)  # high, disliked: disagree
    vote(store, a, 0.0)
    judge(store, b, "helpfulness", 0.2)  # low, liked: disagree
    vote(store, b, 1.0)
    judge(store, c, "helpfulness", 0.9)  # high, liked: agree
    vote(store, c, 1.0)
    judge(store, d, "safety", 0.0, data_type="BOOLEAN")  # unsafe, liked: disagree
    vote(store, d, 1.0)
    judge(store, e, "helpfulness", 0.5)  # exactly the threshold counts as the judge's "good"
    vote(store, e, 0.0)
    rules.sweep()
    got = reasons(store, "judge-vs-user")
    assert set(got) == {a, b, d, e}
    assert got[a] == "helpfulness 0.9 from the judge vs the user's dislike"
    assert got[b] == "helpfulness 0.2 from the judge vs the user's like"
    assert got[d] == "safety 0 from the judge vs the user's like"


def test_a_judge_score_below_the_threshold(tmp_path, store):
    rules = rules_of(tmp_path, store, WITHOUT_SAMPLE)
    low, edge, high = (turn(store, f"l{i}", T0 + i) for i in range(3))
    judge(store, low, "helpfulness", 0.1)
    judge(store, edge, "helpfulness", 0.3)  # not below 0.3
    judge(store, high, "helpfulness", 0.9)
    rules.sweep()
    assert reasons(store, "low-helpfulness") == {low: "helpfulness 0.1 from the judge, below 0.3"}
    # A judge scoring it again, higher: nobody started on it, so it leaves the queue.
    judge(store, low, "helpfulness", 0.8)
    rules.sweep()
    assert "low-helpfulness" not in queued(store)


def test_an_undone_dislike_leaves_the_queue_unless_someone_is_on_it(tmp_path, store):
    rules = rules_of(tmp_path, store, WITHOUT_SAMPLE)
    a, b = turn(store, "u1", T0), turn(store, "u2", T0 + 1)
    vote(store, a, 0.0)
    vote(store, b, 0.0)
    rules.sweep()
    queue = ReviewQueue(store)
    held = queue.claim("ann", queue="dislikes")
    assert held.trace_id == a
    store.delete_score(store.rows("SELECT id FROM scores WHERE trace_id = :t", {"t": a})[0]["id"])
    store.delete_score(store.rows("SELECT id FROM scores WHERE trace_id = :t", {"t": b})[0]["id"])
    rules.sweep()
    assert queued(store)["dislikes"] == {a}  # ann is reviewing it: it stays
    # Sweeping again changes nothing: every item is added once.
    vote(store, b, 0.0)
    rules.sweep()
    rules.sweep()
    assert len(ReviewQueue(store).items(queue="dislikes")) == 2


def test_the_calibration_sample_is_a_uniform_draw_of_turns(tmp_path, store):
    rules = rules_of(tmp_path, store)
    turns = [turn(store, f"s{i}", T0 + i) for i in range(800)]
    # A judge's own trace and a dataset item's are never drawn.
    judge_trace = turn(store, "e1", T0, tags=["evaluation"])
    dataset_trace = turn(store, "e2", T0, tags=["smolagents-chat", "dataset"])
    # Ratings do not decide the draw: disliked turns are in it at the same rate as the rest.
    for t in turns[:400]:
        vote(store, t, 0.0)
    rules.sweep()
    drawn = queued(store)["calibration"]
    assert judge_trace not in drawn and dataset_trace not in drawn
    assert 0.20 < len(drawn) / 800 < 0.30
    disliked_share = len(drawn & set(turns[:400])) / 400
    other_share = len(drawn & set(turns[400:])) / 400
    assert abs(disliked_share - other_share) < 0.08
    rule = ReviewRule("calibration", "sample", rate=0.25)
    assert drawn == {t for t in turns if rule.sampled(t)}  # the same draw every time
    items = ReviewQueue(store).items(queue="calibration", limit=1000)
    assert all(i.calibration and i.sample_rate == 0.25 for i in items)
    assert items[0].reason == "random calibration sample (25% of turns)"
    # Items of the other rules are never part of the calibration sample.
    assert not any(i.calibration for i in ReviewQueue(store).items(queue="dislikes", limit=1000))


def test_a_sweep_works_through_a_backlog_over_several_passes(tmp_path, store):
    rules = ReviewRules(
        store, load_evaluators_file(write(tmp_path, WITHOUT_SAMPLE)).review, batch=10, rounds=2
    )
    traces = [turn(store, f"b{i}", T0 + i) for i in range(50)]
    for t in traces:
        vote(store, t, 0.0)
    rules.sweep()
    assert 0 < len(queued(store)["dislikes"]) <= 20
    for _ in range(5):
        rules.sweep()
    assert queued(store)["dislikes"] == set(traces)


def test_a_trace_added_by_hand(store):
    trace_id = turn(store, "m1", T0)
    queue = ReviewQueue(store)
    assert add_by_hand(queue, trace_id, "owner") == (True, "Added to the review queue (manual).")
    assert add_by_hand(queue, trace_id, "owner") == (
        False,
        "This trace is in the review queue already (manual).",
    )
    assert add_by_hand(queue, "f" * 32, "owner")[1] == f"No trace with the id {'f' * 32} is in the store."
    judge_trace = turn(store, "m2", T0, tags=["evaluation"])
    assert "only turns are reviewed" in add_by_hand(queue, judge_trace, "owner")[1]
    [item] = queue.items(queue=MANUAL)
    assert item.reason == "added by hand by owner" and item.added_by == "owner" and item.state == PENDING


# ----- labels ----------------------------------------------------------------------------------


def test_label_controls_have_the_judges_types_and_keys():
    boolean = LabelSpec("safety", "BOOLEAN")
    numeric = LabelSpec("helpfulness", "NUMERIC")
    categorical = LabelSpec("why", "CATEGORICAL", ("wrong-answer", "other"))
    assert boolean.choices() == [("1 · true", "1"), ("0 · false", "0")]
    assert [value for _, value in numeric.choices()] == [f"{s:g}" for s in NUMERIC_STEPS]
    assert numeric.choices()[0] == ("0 · 0", "0") and numeric.choices()[5] == ("5 · 0.5", "0.5")
    assert numeric.choices()[1] == ("0.1", "0.1")  # no key of its own
    assert numeric.choices()[-1] == ("1 · 1", "1")
    assert categorical.choices() == [("1 · wrong-answer", "wrong-answer"), ("2 · other", "other")]
    assert boolean.parse("1") == Label("safety", "BOOLEAN", value=1.0)
    assert numeric.parse("0.7") == Label("helpfulness", "NUMERIC", value=0.7)
    assert categorical.parse("other").string_value == "other"
    assert numeric.parse(None) is None and numeric.parse(" ") is None
    for spec, raw, message in (
        (boolean, "0.5", "safety is true (1) or false (0)"),
        (numeric, "2", "helpfulness is a number from 0 to 1"),
        (numeric, "nan", "helpfulness is a number from 0 to 1"),
        (categorical, "nope", "'nope' is not a category of why: pick one of wrong-answer, other"),
    ):
        with pytest.raises(ReviewError, match=re.escape(message)):
            spec.parse(raw)


# ----- in the app ------------------------------------------------------------------------------


def decide(prompt: str) -> dict:
    if prompt.startswith("HELP"):
        return {"reasoning": "Looks right.", "score": 0.9}
    if prompt.startswith("SAFE"):
        return {"reasoning": "Harmless.", "score": True}
    if prompt.startswith("WHY"):
        return {"reasoning": "Wrong number.", "score": "wrong-answer"}
    return {"reasoning": "Fine.", "score": True}


def test_the_app_applies_the_rules_as_votes_and_judge_scores_arrive(make_settings, make_runtime, tmp_path):
    path = write(tmp_path, RULES.replace("rate = 0.25", "rate = 1.0"))
    runtime = make_runtime(
        make_settings(EVALUATORS_FILE=str(path)), judge=Judge(JudgeModel(decide), structured=False)
    )
    runtime.feedback.evaluation.poll_s = 0.1
    handlers = ChatHandlers(runtime)
    store = runtime.feedback.store
    history, session, _ = chat_turn(handlers, None, [], "What is 6 times 7?")
    runtime.feedback.telemetry.flush()
    [trace_id] = [t["id"] for t in store.chat_turns(5)]
    # The turn arrives: drawn for calibration (rate 1.0).
    wait_for(lambda: "calibration" in queued(store), 20)
    # The judge scores it 0.9; the user dislikes it: a dislike and a disagreement.
    wait_for(
        lambda: len(store.rows("SELECT 1 AS x FROM scores WHERE name IN ('helpfulness', 'safety')")) == 2, 30
    )
    like(handlers, session, answer_index(history, 0), False)
    handlers.rt.feedback.wake_evaluation()
    wait_for(lambda: {"dislikes", "judge-vs-user"} <= set(queued(store)), 20)
    # (safety true against a dislike is a disagreement too, by the rule's words)
    assert reasons(store, "judge-vs-user") == {
        trace_id: "helpfulness 0.9 from the judge, safety 1 from the judge vs the user's dislike"
    }
    # Undone: both leave the queue (nobody had started on them); the calibration item stays.
    like(handlers, session, answer_index(history, 0), "")
    handlers.rt.feedback.wake_evaluation()
    wait_for(lambda: set(queued(store)) == {"calibration"}, 20)
    banner = describe(runtime.feedback.evaluation, runtime.settings)
    assert "review rules: dislikes, incorrect, judge-vs-user, low-helpfulness, calibration (100%)" in banner


def test_a_failing_sweep_is_logged_and_the_chat_and_votes_go_on(
    make_settings, make_runtime, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.ERROR)
    path = write(tmp_path, RULES)
    runtime = make_runtime(
        make_settings(EVALUATORS_FILE=str(path)), judge=Judge(JudgeModel(decide), structured=False)
    )
    evaluation = runtime.feedback.evaluation
    evaluation.poll_s = 0.1
    calls = []

    def broken() -> int:
        calls.append(time.time())
        raise RuntimeError("the review store is on fire")

    monkeypatch.setattr(evaluation.review, "sweep", broken)
    handlers = ChatHandlers(runtime)
    history, session, _ = chat_turn(handlers, None, [], "What is 2 plus 2?")
    like(handlers, session, answer_index(history, 0), False)
    assert runtime.feedback.store.ratings()[0].value == 0.0  # the vote is stored as ever
    wait_for(lambda: len(calls) >= 2, 20)  # it keeps trying, pass after pass
    assert "The review rules failed a pass; they will try again" in caplog.text
    # The evaluators themselves went on: the judge scored the turn.
    wait_for(lambda: runtime.feedback.store.row("SELECT 1 AS x FROM scores WHERE name = 'helpfulness'"), 20)


def test_a_reviewed_trace_entering_a_queue_by_a_rule_is_done_already(tmp_path, store):
    rules = rules_of(tmp_path, store, WITHOUT_SAMPLE)
    trace_id = turn(store, "r1", T0)
    queue = ReviewQueue(store)
    queue.add([NewItem(trace_id, MANUAL, "by hand")])
    queue.save(queue.claim("ann").id, "ann", [Label("helpfulness", "NUMERIC", 0.0)])
    vote(store, trace_id, 0.0)
    rules.sweep()
    assert {i.queue: i.state for i in queue.items_of(trace_id)} == {MANUAL: DONE, "dislikes": DONE}


# ----- dataset from-traces --reviewed ------------------------------------------------------------


def test_corrected_answers_become_dataset_items_with_expected_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EVALUATORS_FILE", "off")
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    fixed, labelled_only, unreviewed, later = (
        turn(store, f"c{i}", T0 + i, question=f"What is {i} + {i}?") for i in range(4)
    )
    vote(store, fixed, 0.0, reason="Incorrect")
    queue = ReviewQueue(store)
    queue.add([NewItem(t, MANUAL, "by hand") for t in (fixed, labelled_only, later)])
    for t, answer in ((fixed, "0 + 0 = 0"), (labelled_only, None), (later, "6")):
        item = next(i for i in queue.items_of(t))
        queue.claim("ann", queue=MANUAL)
        queue.save(
            item.id, "ann", [Label("helpfulness", "NUMERIC", 0.0)], corrected_answer=answer, note="fixed"
        )
    out = io.StringIO()
    assert evals_cli(["dataset", "from-traces", "--name", "fixes", "--reviewed"], out) == 0
    assert "2 turns match: 2 new items in dataset 'fixes'" in out.getvalue()
    name, items = load_dataset("fixes", store=store)
    assert [(i.input, i.expected) for i in items] == [
        ("What is 0 + 0?", "0 + 0 = 0"),
        ("What is 3 + 3?", "6"),
    ]
    meta = items[0].metadata
    assert meta["source_trace"] == fixed and meta["reviewed_by"] == "ann" and meta["review_note"] == "fixed"
    assert (
        meta["labels"] == {"helpfulness": 0.0} and meta["feedback"] == 0.0 and meta["answer"] == "answer c0"
    )
    # A later correction updates the item's expected output (same item, no duplicate).
    item = queue.items_of(later)[0]
    queue.save(item.id, "bob", [], corrected_answer="3 + 3 = 6")
    assert evals_cli(["dataset", "from-traces", "--name", "fixes", "--reviewed"], io.StringIO()) == 0
    _, items = load_dataset("fixes", store=store)
    assert [i.expected for i in items] == ["0 + 0 = 0", "3 + 3 = 6"]
    # Other selections combine with it: only the disliked corrected turn.
    assert (
        evals_cli(["dataset", "from-traces", "--name", "bad", "--reviewed", "--feedback", "0"], io.StringIO())
        == 0
    )
    assert [i.expected for i in load_dataset("bad", store=store)[1]] == ["0 + 0 = 0"]
    # A plain selection later does not erase a correction already in the dataset.
    vote(store, later, 0.0)
    assert evals_cli(["dataset", "from-traces", "--name", "fixes", "--feedback", "0"], io.StringIO()) == 0
    assert [i.expected for i in load_dataset("fixes", store=store)[1]] == ["0 + 0 = 0", "3 + 3 = 6"]
    assert unreviewed not in {i.metadata["source_trace"] for i in load_dataset("fixes", store=store)[1]}
    store.close()
