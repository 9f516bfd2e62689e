"""`python -m evals ab status [--json]`: the experiment's figures and a verdict line per variant,
as text and as one JSON object (no NaN), from the store the app writes."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from evals import ab
from evals.ab import Experiment, VariantSpec, results
from evals.cli import Context, cmd_ab_status, parser
from feedback.store import Store
from tests.evals.test_ab import one_vote_each, write

THREE = Experiment("exp", "A", (VariantSpec("A", 2), VariantSpec("B", 1), VariantSpec("C", 1, paused=True)))


@pytest.fixture(autouse=True)
def _fresh_memory():
    ab.forget_cached()
    yield
    ab.forget_cached()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data" / "feedback.sqlite3")
    yield s
    s.close()


def status(store: Store, *argv: str, experiment=THREE) -> tuple[int, str]:
    args = parser().parse_args(["ab", "status", *argv])
    out = io.StringIO()
    ctx = Context(SimpleNamespace(experiment=experiment), store, [])  # type: ignore[arg-type]
    return args.fn(ctx, args, out), out.getvalue()


def test_status_prints_every_variant_and_a_verdict_line_each(store):
    write(
        store,
        one_vote_each(
            {"A": 300, "B": 150, "C": 150}, {"A": 0.45, "B": 0.75, "C": 0.45}, {"A": 1, "B": 1, "C": 4}
        ),
    )
    code, text = status(store)
    assert code == 0
    r = results(store, THREE)
    a = r.figures("A")
    lines = text.splitlines()
    assert lines[0] == "Experiment exp: control A; A 50%, B 25%, C 25% (paused)"
    assert lines[2].startswith(
        "Assignment: the split of users matches the weights (users A 300 / B 150 / C 150"
    )
    assert f"A (control, weight 50%): {a.turns:,} turns, {a.users:,} users, errors 0 (0.0%)" in lines
    low, high = a.like_interval
    assert any(
        line.startswith(
            f"  like rate {100 * a.like_rate:.1f}% (95% interval {100 * low:.1f}% to {100 * high:.1f}%)"
        )
        for line in lines
    )
    verdicts = [line for line in lines if line.startswith("VERDICT ")]
    assert [v.split(":")[0] for v in verdicts] == ["VERDICT B", "VERDICT C"]
    assert verdicts[0].startswith("VERDICT B: BETTER (decided on ")
    assert verdicts[1].startswith("VERDICT C: NO DIFFERENCE YET: ") and verdicts[1].endswith(
        "Guardrails that went worse: latency."
    )
    assert "guardrail [worse] Latency is worse in the variant" in text


def test_status_json_is_one_object_with_every_figure(store):
    write(
        store,
        one_vote_each({"A": 60, "B": 30, "C": 30}, {"A": 0.5, "B": 0.5, "C": 0.5}, {"A": 1, "B": 1, "C": 1}),
    )
    code, out = status(store, "--json")
    assert code == 0
    data = json.loads(out)  # one object
    assert data["experiment"] == "exp" and data["control"] == "A" and data["paused"] == ["C"]
    assert [v["name"] for v in data["variants"]] == ["A", "B", "C"]
    assert [c["variant"] for c in data["comparisons"]] == ["B", "C"]
    b = data["comparisons"][0]
    assert b["status"] == "no difference yet" and b["primary"]["kind"] == "like_rate"
    assert {g["kind"] for g in b["guardrails"]} == {"errors", "cost", "latency"}
    assert data["srm"]["users"] == {"A": 60, "B": 30, "C": 30} and data["srm"]["flagged"] is False
    assert data["variants"][0]["like_rate_95"][0] < data["variants"][0]["like_rate"]
    json.dumps(data, allow_nan=False)


def test_status_with_no_experiment_says_how_to_set_one(store, capsys):
    code, out = status(store, experiment=None)
    assert code == 2 and out == ""
    assert "VARIANTS_FILE is not set" in capsys.readouterr().err


def test_since_takes_a_date():
    args = parser().parse_args(["ab", "status", "--since", "2026-11-01"])
    assert args.since == pytest.approx(1793491200.0)
    with pytest.raises(SystemExit):
        parser().parse_args(["ab", "status", "--since", "yesterday"])
    args = parser().parse_args(["ab", "replay", "gsm8k", "--limit", "5"])
    assert args.fn.__name__ == "cmd_ab_replay" and args.limit == 5
    assert cmd_ab_status.__name__ == "cmd_ab_status"
