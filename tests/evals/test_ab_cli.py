"""`python -m evals ab status [--json]`: the experiment's figures and a verdict line per variant,
as text and as one JSON object (no NaN), from the store the app writes."""

from __future__ import annotations

import io
import json
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest

from evals import ab
from evals.ab import Experiment, VariantSpec, results
from evals.cli import Context, cmd_ab_status, parser
from feedback.store import Store
from tests.evals.test_ab import one_vote_each, write
from tests.fakes import ScriptedModel, all_text, code_reply, last_task

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


PROMPTS = """
[experiment]
name = "prompt-test"
control = "alpha"

[[variant]]
name = "alpha"
weight = 1
system_prompt = "You are agent ALPHA. {{ custom_instructions }}"

[[variant]]
name = "beta"
weight = 1
paused = true
system_prompt = "You are agent BETA. {{ custom_instructions }}"
"""
QUESTIONS = {"What is 2+2?": "4", "What is 3+3?": "6", "What is 5+5?": "10", "What is 7+1?": "8"}


def by_variant(messages: list[Any]) -> str:
    """ALPHA answers every question right; BETA only the first."""
    task = last_task(messages)
    right = QUESTIONS.get(task.strip(), "0")
    beta = "agent BETA" in all_text(messages)
    answer = right if not beta or task.strip() == "What is 2+2?" else "99"
    return code_reply(f"final_answer({answer!r})")


def test_replay_runs_the_dataset_against_every_variant_and_compares_each_with_the_control(
    tmp_path, make_settings, monkeypatch
):
    import runtime.runtime as runtime_module

    path = tmp_path / "variants.toml"
    path.write_text(textwrap.dedent(PROMPTS))
    settings = make_settings(VARIANTS_FILE=str(path))
    real = runtime_module.create_runtime
    monkeypatch.setattr(
        runtime_module, "create_runtime", lambda s, **kw: real(s, model=ScriptedModel(by_variant), **kw)
    )
    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(json.dumps({"input": q, "expected_output": a}) + "\n" for q, a in QUESTIONS.items())
    )
    store = Store(settings.store_url)
    try:
        args = parser().parse_args(["ab", "replay", str(data), "--json"])
        out = io.StringIO()
        assert args.fn(Context(settings, store, []), args, out) == 0
        found = json.loads(out.getvalue())
        runs = found["runs"]
        assert {v: (r["run_name"], r["correct"], r["graded"]) for v, r in runs.items()} == {
            "alpha": ("prompt-test-alpha", 4, 4),
            "beta": ("prompt-test-beta", 1, 4),  # paused, replayed all the same
        }
        cmp = found["comparisons"]["beta"]
        assert cmp["run_a"] == "prompt-test-alpha" and cmp["run_b"] == "prompt-test-beta"
        paired = cmp["paired"]
        assert paired["table"] == [[1, 3], [0, 0]] and len(paired["regressed"]) == 3
        assert paired["mcnemar_p"] == pytest.approx(0.25)  # 3 discordant pairs, all one way: 2 / 2**3
        # Each item's trace says its variant; replays are dataset traces, never in the results.
        rows = store.rows("SELECT variant, experiment, tags FROM traces WHERE tags LIKE '%\"dataset\"%'")
        assert sorted(r["variant"] for r in rows) == ["alpha"] * 4 + ["beta"] * 4
        assert {r["experiment"] for r in rows} == {"prompt-test"}
        assert results(store, Experiment.of(settings.experiment)).figures("alpha").turns == 0
        # The text: each run's accuracy, then each variant against the control (McNemar).
        args = parser().parse_args(["ab", "replay", str(data)])
        out = io.StringIO()
        assert args.fn(Context(settings, store, []), args, out) == 0
        text = out.getvalue()
        assert "prompt-test-alpha (alpha) on items: 4/4 correct" in text
        assert "beta against the control alpha:" in text and "McNemar" in text
    finally:
        store.close()


def test_status_reads_the_apps_variants_file(tmp_path, monkeypatch):
    from evals.cli import main

    path = tmp_path / "variants.toml"
    path.write_text(textwrap.dedent(PROMPTS))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EVALUATORS_FILE", "off")
    monkeypatch.setenv("VARIANTS_FILE", str(path))
    out = io.StringIO()
    assert main(["ab", "status"], out) == 0
    text = out.getvalue()
    assert text.startswith("Experiment prompt-test: control alpha; alpha 50%, beta 50% (paused)")
    assert (
        "VERDICT beta: NO DIFFERENCE YET: Like rate: no decision yet: no rated turns in either arm yet."
        in text
    )
    monkeypatch.setenv("VARIANTS_FILE", "off")
    assert main(["ab", "status"], io.StringIO()) == 2


def test_a_dataset_run_during_an_experiment_is_the_controls_and_a_weightless_variant_replays(
    tmp_path, make_settings, monkeypatch
):
    """A plain `dataset run` while VARIANTS_FILE is set runs the control (it hashed its pseudo-user
    into any variant before); `ab replay` of a variant with weight 0 runs it too (assignment by
    hash refused "every weight is 0" in the experiment reduced to it)."""
    import runtime.runtime as runtime_module
    from evals.dataset_run import DatasetRun
    from evals.datasets import load_dataset

    path = tmp_path / "variants.toml"
    path.write_text(textwrap.dedent(PROMPTS).replace("paused = true\n", ""))  # beta live, half the users
    settings = make_settings(VARIANTS_FILE=str(path))
    real = runtime_module.create_runtime
    monkeypatch.setattr(
        runtime_module, "create_runtime", lambda s, **kw: real(s, model=ScriptedModel(by_variant), **kw)
    )
    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(json.dumps({"input": q, "expected_output": a}) + "\n" for q, a in QUESTIONS.items())
    )
    runtime = runtime_module.create_runtime(settings)
    try:
        runs = [f"plain-{n}" for n in range(6)]  # six pseudo-users: by hash some would be beta's
        assert {runtime.assignment(f"dataset:{run}").variant for run in runs} == {"alpha", "beta"}
        for run in runs:
            DatasetRun(runtime, run, "items").run(load_dataset(str(data))[1][:1])
        runtime.feedback.telemetry.flush()
        rows = runtime.feedback.store.rows("SELECT variant FROM traces WHERE tags LIKE '%\"dataset\"%'")
        assert [r["variant"] for r in rows] == ["alpha"] * 6
    finally:
        runtime.close()
    path.write_text(textwrap.dedent(PROMPTS).replace("weight = 1\npaused = true", "weight = 0"))
    settings = make_settings(VARIANTS_FILE=str(path))
    store = Store(settings.store_url)
    try:
        args = parser().parse_args(["ab", "replay", str(data), "--json"])
        out = io.StringIO()
        assert args.fn(Context(settings, store, []), args, out) == 0
        runs = json.loads(out.getvalue())["runs"]
        assert runs["beta"]["correct"] == 1 and runs["alpha"]["correct"] == 4
    finally:
        store.close()
