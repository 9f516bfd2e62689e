"""evals.judge_trust: judges against reviewer labels read from the store (both backends), thumbs
kept apart, the verdict that gates read, the `agreement` command, and the unverified gate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from evals.cli import Context, cmd_agreement, parser
from evals.cli import main as evals_cli
from evals.config import Evaluator
from evals.judge_trust import judge_trust, reviewer_pairs, score_gates, thumbs_pairs
from evals.trust import UNVERIFIED, VERIFIED, TrustVerdict
from feedback.store import BY_JUDGE, BY_REVIEWER, BY_USER, RATING_NAME, Store

HELPFUL = Evaluator(name="helpful", data_type="BOOLEAN", prompt="Is it helpful? {input} {output}")
SLOPPY = Evaluator(name="sloppy", data_type="BOOLEAN", prompt="Is it sloppy? {input} {output}")
FRESH = Evaluator(name="fresh", data_type="NUMERIC", prompt="Rate it: {input} {output}")
WHY = Evaluator(
    name="why", data_type="CATEGORICAL", categories=("wrong", "long", "other"), prompt="Why? {input} {output}"
)
GOAL = Evaluator(name="goal", target="conversation", data_type="BOOLEAN", prompt="Goal? {conversation}")


def judged(store: Store, e: Evaluator, target: str, value: object, *, version: str | None = None) -> None:
    conversation = e.target == "conversation"
    categorical = isinstance(value, str)
    store.upsert_score(
        score_id=f"judge-{e.name}-{target}-{version or e.version}",
        trace_id="" if conversation else target,
        session_id=target if conversation else "s",
        name=e.name,
        value=None if categorical else float(value),  # type: ignore[arg-type]
        string_value=value if categorical else None,  # type: ignore[arg-type]
        data_type=e.data_type,
        source="EVAL",
        scored_by=BY_JUDGE,
        metadata={"evaluator": e.name, "evaluator_version": version or e.version},
    )


def labelled(store: Store, e: Evaluator, target: str, value: object) -> None:
    conversation = e.target == "conversation"
    categorical = isinstance(value, str)
    store.upsert_score(
        score_id=f"label-{e.name}-{target}",
        trace_id="" if conversation else target,
        session_id=target if conversation else "s",
        name=e.name,
        value=None if categorical else float(value),  # type: ignore[arg-type]
        string_value=value if categorical else None,  # type: ignore[arg-type]
        data_type=e.data_type,
        source="ANNOTATION",
        scored_by=BY_REVIEWER,
    )


def thumb(store: Store, target: str, value: int) -> None:
    store.upsert_score(
        score_id=f"vote-{target}",
        trace_id=target,
        name=RATING_NAME,
        value=float(value),
        data_type="BOOLEAN",
        source="user",  # as feedback.votes writes a vote
        scored_by=BY_USER,
    )


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.close()


def fill(store: Store) -> None:
    """40 turns: `helpful` agrees with the reviewers on 37 (kappa 0.85), `sloppy` on 22 (0.1);
    users' thumbs say the opposite of `helpful` on ten turns; `fresh` has no label."""
    for i in range(40):
        t = f"t{i:02d}"
        truth = i % 2
        judged(store, HELPFUL, t, truth if i >= 3 else 1 - truth)
        labelled(store, HELPFUL, t, truth)
        judged(store, SLOPPY, t, truth if i % 5 < 3 else 1 - truth)
        labelled(store, SLOPPY, t, truth if i < 38 else 1 - truth)
        judged(store, FRESH, t, 0.5)
    for i in range(10):
        thumb(store, f"t{i:02d}", 1 - (i % 2))


def test_each_llm_judge_is_verified_or_not_by_its_reviewer_labels(store):
    fill(store)
    verdicts = judge_trust(store, [HELPFUL, SLOPPY, FRESH])
    assert set(verdicts) == {"helpful", "sloppy", "fresh"}
    assert verdicts["helpful"].status == VERIFIED, verdicts["helpful"].reason
    # 37 of 40 agree, balanced: p_o = .925, p_e = .5 -> kappa = .85
    assert verdicts["helpful"].agreement.overall.value == pytest.approx(0.85)
    assert verdicts["sloppy"].status == UNVERIFIED
    assert "lower bound is under 0.40" in verdicts["sloppy"].reason
    assert verdicts["fresh"].status == UNVERIFIED
    assert verdicts["fresh"].reasons[0].startswith("No reviewer labels yet")

    # Thumbs are kept apart: ten that contradict `helpful` do not touch its verdict.
    assert len(reviewer_pairs(store, HELPFUL).pairs) == 40
    thumbs = thumbs_pairs(store, HELPFUL).pairs
    assert len(thumbs) == 10 and all(j != u for j, u in thumbs[3:])


def test_pairs_are_the_current_versions_latest_live_scores_oldest_label_first(store):
    fill(store)
    # An earlier version's score on a labelled turn that the current version never judged.
    labelled(store, HELPFUL, "t99", 1)
    judged(store, HELPFUL, "t99", 1, version="0ld0ld0ld0")
    # A deleted label is no label.
    store.delete_score("label-helpful-t00")
    found = reviewer_pairs(store, HELPFUL)
    assert len(found.pairs) == 39 and found.other_versions == 1
    # With too few current pairs, the verdict says where the others are.
    few = judge_trust(
        store, [Evaluator(name="helpful", data_type="BOOLEAN", prompt="Edited: {input} {output}")]
    )
    assert "earlier versions of this evaluator" in few["helpful"].reason
    assert "python -m evals backfill" in few["helpful"].reason


def test_categorical_and_conversation_judges(store):
    for i in range(30):
        t = f"t{i:02d}"
        reason = ("wrong", "long", "other")[i % 3]
        judged(store, WHY, t, reason)
        labelled(store, WHY, t, reason if i % 10 else "other")
        session = f"session-{i}"
        judged(store, GOAL, session, i % 2)
        labelled(store, GOAL, session, i % 2)
    why = reviewer_pairs(store, WHY).pairs
    assert len(why) == 30 and {j for j, _ in why} == {"wrong", "long", "other"}
    verdicts = judge_trust(store, [WHY, GOAL])
    assert verdicts["goal"].status == VERIFIED
    assert verdicts["goal"].agreement.overall.value == pytest.approx(1.0)
    assert verdicts["why"].agreement.overall.n == 30
    assert thumbs_pairs(store, WHY).pairs == [] and thumbs_pairs(store, GOAL).pairs == []


def test_code_checks_are_not_judges(store, tmp_path: Path):
    (tmp_path / "checks.py").write_text("def ok(turn):\n    return True\n")
    check = Evaluator(
        name="ok", kind="code", data_type="BOOLEAN", function="checks.py:ok", source=tmp_path / "e.toml"
    )
    assert judge_trust(store, [check, FRESH]).keys() == {"fresh"}


def verified() -> TrustVerdict:
    return TrustVerdict(VERIFIED, ())


def unverified(why: str) -> TrustVerdict:
    return TrustVerdict(UNVERIFIED, (why,))


def test_gates_ignore_an_unverified_judge_and_say_why():
    means = {"helpful": 0.4, "sloppy": 0.1, "ok": 1.0}
    gates = {"helpful": 0.7, "sloppy": 0.7, "ok": 0.9, "missing": 0.5}
    verdicts = {
        "helpful": verified(),
        "sloppy": unverified("Only 12 reviewer labels; at least 30 are needed."),
    }
    out = score_gates(means, gates, verdicts)
    assert not out.ok
    assert out.failed == [
        "helpful mean 0.400 is under its minimum 0.7.",
        "No item has a missing score, so there is nothing to hold to 0.5.",
    ]
    assert out.ignored == [
        "Not holding sloppy to its minimum 0.7: its judge is unverified. "
        "Only 12 reviewer labels; at least 30 are needed."
    ]
    assert out.passed == ["ok mean 1.000 is at least 0.9."]  # a code check: always held
    # An unverified judge under its minimum does not fail the run; verified, it would.
    assert score_gates({"sloppy": 0.1}, {"sloppy": 0.7}, verdicts).ok
    assert not score_gates({"sloppy": 0.1}, {"sloppy": 0.7}, {"sloppy": verified()}).ok


def test_the_agreement_command_shows_reviewers_thumbs_and_the_verdict(store, make_settings):
    fill(store)
    ctx = Context(make_settings(), store, [HELPFUL, SLOPPY, FRESH])

    def run(*args: str) -> str:
        out = io.StringIO()
        assert cmd_agreement(ctx, parser().parse_args(["agreement", *args]), out) == 0
        return out.getvalue()

    results = json.loads(run("--json"))
    helpful = next(r for r in results if r["evaluator"] == "helpful")
    # Today's fields (the judge against thumbs) are kept: 10 turns, the judge right on 3.
    # Turns 0-2 (judge flipped, so it matches the thumb): user 1/judge 1 twice, user 0/judge 0 once;
    # turns 3-9 (judge = truth, thumb = its opposite): user 0/judge 1 four times, user 1/judge 0 three.
    assert helpful["pairs"] == 10 and helpful["agreement"] == pytest.approx(0.3)
    assert helpful["table"] == [[1, 4], [3, 2]]
    assert helpful["thumbs"]["overall"]["n"] == 10
    assert helpful["reviewers"]["n"] == 40 and helpful["reviewers"]["overall"]["value"] == pytest.approx(0.85)
    assert helpful["reviewers"]["overall"]["low"] <= 0.85 <= helpful["reviewers"]["overall"]["high"]
    assert helpful["verdict"]["status"] == "verified"
    fresh = next(r for r in results if r["evaluator"] == "fresh")
    assert fresh["verdict"]["status"] == "unverified" and fresh["reviewers"]["n"] == 0
    # Its constant 0.5 is a like on every turn: kappa against thumbs is undefined, and says so.
    assert fresh["pairs"] == 10 and fresh["kappa"] is None
    assert "every judge value is the same" in fresh["thumbs"]["overall"]["reason"]

    text = run()
    assert "helpful (llm, BOOLEAN, version" in text and "): VERIFIED" in text
    assert "against reviewers: Cohen's kappa 0.85 (95% interval" in text
    assert "against user thumbs (shown, never a verdict" in text
    assert "drift: not measured (drift needs two windows of 50 labels (100 in all); there are 40)" in text
    assert "sloppy (llm, BOOLEAN" in text and "): UNVERIFIED" in text
    # The window is the caller's: two windows of 20 out of 40; the three misses are all in the
    # earlier one, so agreement rose: no drift.
    assert (
        "No drift: Cohen's kappa went from 0.70 over the previous 20 labels to 1.00 over the last 20"
        in run("--window", "20", "--evaluator", "helpful")
    )
    assert "at least 50 are needed" in run("--min-labels", "50", "--evaluator", "helpful")


def test_a_score_gate_needs_its_evaluator_in_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EVALUATORS_FILE", "off")
    (tmp_path / "evaluators.toml").write_text("")
    out = io.StringIO()
    code = evals_cli(
        ["--evaluators", str(tmp_path / "evaluators.toml"), "dataset", "run", "gsm8k", "--run-name", "g",
         "--limit", "1", "--fail-under-score", "helpful=0.7"],
        out,
    )  # fmt: skip
    assert code == 2
    with pytest.raises(SystemExit):
        parser().parse_args(["dataset", "run", "gsm8k", "--run-name", "g", "--fail-under-score", "helpful"])
