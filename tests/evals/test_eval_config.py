"""The evaluators file: every mistake is one clear sentence; versions, filters and sampling."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from evals.config import Evaluator, EvaluatorsError, load_evaluators
from evals.context import ConversationData, TurnData

CHECKS = """
def no_error(data):
    return data["status"] == "OK"

NOT_A_FUNCTION = 3
"""


def write(tmp_path: Path, body: str, files: dict[str, str] | None = None) -> Path:
    for name, content in {"checks.py": CHECKS, **(files or {})}.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "evaluators.toml"
    path.write_text(textwrap.dedent(body))
    return path


def one(tmp_path: Path, body: str, files: dict[str, str] | None = None) -> Evaluator:
    [evaluator] = load_evaluators(write(tmp_path, body, files))
    return evaluator


LLM = """
[[evaluator]]
name = "helpfulness"
kind = "llm"
prompt = "Question: {input}\\nAnswer: {output}\\nReply with {{\\"score\\": 0.5}}."
"""


def test_a_full_file_loads_with_defaults_and_normalised_values(tmp_path):
    path = write(
        tmp_path,
        """
        [[evaluator]]
        name = "helpfulness"
        kind = "llm"
        prompt = "Q: {input} A: {output} steps: {steps}"

        [[evaluator]]
        name = "tone"
        kind = "llm"
        target = "conversation"
        data_type = "CATEGORICAL"
        categories = ["friendly", "neutral", "rude"]
        prompt = "{conversation}"
        sampling_rate = 0.25
        filter = { feedback = [0, "none"], tags = "smolagents-chat", metadata = { provider = "hf" } }
        idle_s = 120
        messages = "first_last"
        enabled = false

        [[evaluator]]
        name = "no-error"
        kind = "code"
        data_type = "BOOLEAN"
        function = "checks.py:no_error"
        """,
    )
    helpful, tone, code = load_evaluators(path)
    assert (helpful.kind, helpful.target, helpful.data_type, helpful.sampling_rate) == (
        "llm",
        "turn",
        "NUMERIC",
        1.0,
    )
    assert helpful.enabled and helpful.filter == {} and helpful.idle_s == 600.0 and helpful.messages == "all"
    assert tone.categories == ("friendly", "neutral", "rude")
    assert dict(tone.filter) == {
        "feedback": (0.0, None),
        "tags": ("smolagents-chat",),
        "metadata": {"provider": "hf"},
    }
    assert (tone.idle_s, tone.messages, tone.enabled, tone.sampling_rate) == (
        120.0,
        "first_last",
        False,
        0.25,
    )
    assert code.function_callable()({"status": "OK"}) is True
    assert code.function_callable() is code.function_callable()
    assert all(len(e.version) == 10 and int(e.version, 16) >= 0 for e in (helpful, tone, code))
    with pytest.raises(TypeError):
        tone.filter["status"] = "OK"  # read-only
    assert hash(tone) == hash(load_evaluators(path)[1])


def test_an_empty_file_has_no_evaluators(tmp_path):
    assert load_evaluators(write(tmp_path, "")) == []


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\npromt = "?"',
            "promt",
            "unknown key 'promt'; the keys are",
        ),
        ('kind = "llm"\nprompt = "{input}"', "name", "#1 (no name): name is missing"),
        ('name = "x"\nprompt = "{input}"', "kind", "kind is missing"),
        ('name = "x y"\nkind = "llm"\nprompt = "{input}"', "name", "name must be 1 to 100 letters"),
        ('name = "user-feedback"\nkind = "llm"\nprompt = "{input}"', "name", "is the users' own rating"),
        ('name = "x"\nkind = "lm"\nprompt = "{input}"', "kind", 'kind must be "llm", "code", not \'lm\''),
        ('name = "x"\nkind = "llm"\ntarget = "session"\nprompt = "{input}"', "target", "target must be"),
        (
            'name = "x"\nkind = "llm"\ndata_type = "numeric"\nprompt = "{input}"',
            "data_type",
            "data_type must be",
        ),
        (
            'name = "x"\nkind = "llm"\ndata_type = "CATEGORICAL"\nprompt = "{input}"',
            "categories",
            "a CATEGORICAL evaluator needs categories",
        ),
        (
            'name = "x"\nkind = "llm"\ncategories = ["a"]\nprompt = "{input}"',
            "categories",
            "categories are for CATEGORICAL evaluators only",
        ),
        (
            'name = "x"\nkind = "llm"\ndata_type = "CATEGORICAL"\ncategories = ["a", "a"]\nprompt = "{input}"',
            "categories",
            "has a category twice",
        ),
        ('name = "x"\nkind = "llm"', "prompt", "an llm evaluator needs a prompt"),
        ('name = "x"\nkind = "llm"\nprompt = "  "', "prompt", "an llm evaluator needs a prompt"),
        (
            'name = "x"\nkind = "llm"\nprompt = "{question}"',
            "prompt",
            "uses {question}, which is not a variable",
        ),
        ('name = "x"\nkind = "llm"\nprompt = "{}"', "prompt", "uses {}, which is not a variable"),
        ('name = "x"\nkind = "llm"\nprompt = "{input.__class__}"', "prompt", "uses {input.__class__}"),
        ('name = "x"\nkind = "llm"\nprompt = "{input!r}"', "prompt", "has a format spec or a conversion"),
        (
            'name = "x"\nkind = "llm"\nprompt = "json: {\\"a\\": 1}"',
            "prompt",
            "literal braces are written {{ and }}",
        ),
        ('name = "x"\nkind = "llm"\nprompt = "{input"', "prompt", "write literal braces as {{ and }}"),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfunction = "checks.py:no_error"',
            "function",
            'function is for kind = "code"',
        ),
        (
            'name = "x"\nkind = "code"',
            "function",
            'a code evaluator needs function = "file.py:function_name"',
        ),
        (
            'name = "x"\nkind = "code"\nfunction = "checks.py:no_error"\nprompt = "{input}"',
            "prompt",
            'prompt is for kind = "llm"',
        ),
        (
            'name = "x"\nkind = "code"\nfunction = "checks.py"',
            "function",
            'must look like "checks.py:no_error"',
        ),
        ('name = "x"\nkind = "code"\nfunction = "checks.txt:f"', "function", "must be a .py file"),
        ('name = "x"\nkind = "code"\nfunction = "missing.py:f"', "function", "missing.py cannot be read"),
        (
            'name = "x"\nkind = "code"\nfunction = "checks.py:absent"',
            "function",
            "checks.py has no function 'absent'",
        ),
        (
            'name = "x"\nkind = "code"\nfunction = "checks.py:NOT_A_FUNCTION"',
            "function",
            "'NOT_A_FUNCTION' in checks.py is not a function",
        ),
        (
            'name = "x"\nkind = "code"\nfunction = "broken.py:f"',
            "function",
            "loading broken.py failed: ZeroDivisionError: division by zero",
        ),
        ('name = "x"\nkind = "llm"\nprompt = "{input}"\nsampling_rate = 1.5', "sampling_rate", "from 0 to 1"),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nsampling_rate = -0.1',
            "sampling_rate",
            "from 0 to 1",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nsampling_rate = "half"',
            "sampling_rate",
            "from 0 to 1",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nsampling_rate = true',
            "sampling_rate",
            "from 0 to 1",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { score = 1 }',
            "filter",
            "unknown condition 'score'; the conditions are \"feedback\"",
        ),
        ('name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = "bad"', "filter", "filter must be a table"),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { feedback = 2 }',
            "filter.feedback",
            'must be 0 (disliked), 1 (liked), "none"',
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { feedback = true }',
            "filter.feedback",
            "not True",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { status = "FAILED" }',
            "filter.status",
            'filter status must be "OK", "WARNING" or "ERROR"',
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { tags = [1] }',
            "filter.tags",
            "filter tags must be a string or a list of strings",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { metadata = { a = [1] } }',
            "filter.metadata",
            "filter metadata 'a' must be a string, number or boolean",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nfilter = { min_latency_ms = -1 }',
            "filter.min_latency_ms",
            "a number of 0 or more",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nidle_s = 60',
            "idle_s",
            'for target = "conversation"',
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nmessages = "all"',
            "messages",
            'for target = "conversation"',
        ),
        (
            'name = "x"\nkind = "llm"\ntarget = "conversation"\nprompt = "{conversation}"\nmessages = "some"',
            "messages",
            'messages must be "all", "pairs", "first_last", not \'some\'',
        ),
        (
            'name = "x"\nkind = "llm"\ntarget = "conversation"\nprompt = "{conversation}"\nidle_s = 0',
            "idle_s",
            "idle_s must be a number of seconds above 0",
        ),
        (
            'name = "x"\nkind = "llm"\nprompt = "{input}"\nenabled = "yes"',
            "enabled",
            "enabled must be true or false",
        ),
    ],
)
def test_each_mistake_is_a_sentence_naming_file_evaluator_and_field(tmp_path, body, field, message):
    path = write(tmp_path, "[[evaluator]]\n" + body + "\n", {"broken.py": "x = 1 / 0\n"})
    with pytest.raises(EvaluatorsError) as caught:
        load_evaluators(path)
    error = caught.value
    text = str(error)
    assert message in text
    assert text.startswith(f"In {path}, evaluator ") and text.endswith(".")
    assert error.path == path and error.field == field
    if "name" in body.splitlines()[0] and field != "name":
        assert 'evaluator "x"' in text


def test_duplicate_names_are_refused(tmp_path):
    path = write(tmp_path, LLM + LLM)
    with pytest.raises(
        EvaluatorsError, match='evaluator "helpfulness": another evaluator of this file has the same name'
    ):
        load_evaluators(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("title = 'x'\n", "unknown top-level key 'title'; each evaluator is an [[evaluator]] table"),
        ('[evaluator]\nname = "x"\n', "evaluators must be [[evaluator]] tables (double brackets)"),
        ("[[evaluator]\n", "is not valid TOML"),
    ],
)
def test_file_level_mistakes(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(EvaluatorsError, match="evaluators.toml") as caught:
        load_evaluators(path)
    assert message in str(caught.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(EvaluatorsError, match=r"The evaluators file .*nothing\.toml does not exist\."):
        load_evaluators(tmp_path / "nothing.toml")


def test_an_llm_evaluator_has_no_function(tmp_path):
    with pytest.raises(EvaluatorsError, match='"helpfulness" is not a code evaluator'):
        one(tmp_path, LLM).function_callable()


# ----- versions ---------------------------------------------------------------------------


def test_version_is_stable_across_loads_and_processes(tmp_path):
    first = one(tmp_path, LLM)
    again = one(tmp_path, LLM)
    assert first.version == again.version and first == again
    # A literal, so a change to what the hash covers (which renames every stored score's
    # version) is a deliberate decision, not an accident.
    assert Evaluator(name="x", prompt="{input}").version == "1536618a0a"


BASE = {"name": "x", "kind": "llm", "target": "conversation", "prompt": "{conversation}"}


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "{conversation}!"},
        {"target": "turn", "prompt": "{conversation}"},
        {"data_type": "BOOLEAN"},
        {"data_type": "CATEGORICAL", "categories": ("a", "b")},
        {"sampling_rate": 0.5},
        {"filter": {"feedback": 0}},
        {"messages": "pairs"},
    ],
)
def test_what_changes_results_changes_the_version(change):
    assert Evaluator(**{**BASE, **change}).version != Evaluator(**BASE).version


def test_categories_and_filter_values_are_part_of_the_version():
    cat = {**BASE, "data_type": "CATEGORICAL"}
    assert Evaluator(**cat, categories=("a", "b")).version != Evaluator(**cat, categories=("a", "c")).version
    assert (
        Evaluator(**BASE, filter={"feedback": 0}).version != Evaluator(**BASE, filter={"feedback": 1}).version
    )


def test_enabled_idle_time_and_name_do_not_change_the_version():
    base = Evaluator(**BASE)
    assert Evaluator(**BASE, enabled=False).version == base.version
    assert Evaluator(**BASE, idle_s=5).version == base.version
    assert Evaluator(**{**BASE, "name": "y"}).version == base.version


def test_a_code_evaluator_version_follows_its_file_and_function(tmp_path):
    body = '[[evaluator]]\nname = "c"\nkind = "code"\nfunction = "checks.py:no_error"\n'
    before = one(tmp_path, body)
    assert one(tmp_path, body).version == before.version
    other = one(tmp_path, body.replace("no_error", "other"), {"checks.py": CHECKS + "\nother = no_error\n"})
    assert other.version != before.version
    changed = one(tmp_path, body, {"checks.py": CHECKS.replace('"OK"', '"ERROR"')})
    assert changed.version != before.version
    # Each version keeps the function it was checked with.
    assert changed.function_callable()({"status": "ERROR"}) is True
    assert before.function_callable()({"status": "ERROR"}) is False


# ----- filters ----------------------------------------------------------------------------


def turn(**values) -> TurnData:
    base = {
        "trace_id": "t1",
        "user_id": "alice",
        "status": "OK",
        "model": "gpt-x",
        "tags": ["smolagents-chat", "beta"],
        "tools": ["web_search"],
        "metadata": {"provider": "hf", "app_version": "0.1.0"},
        "latency_ms": 1500.0,
    }
    return TurnData(**{**base, **values})


def matches(filter_: dict, data) -> bool:
    return Evaluator(name="f", prompt="{input}", target="turn", filter=filter_).matches(data)


@pytest.mark.parametrize(
    ("filter_", "yes", "no"),
    [
        ({"feedback": 0}, {"feedback": 0.0}, {"feedback": 1.0}),
        ({"feedback": 1}, {"feedback": 1.0}, {"feedback": None}),
        ({"feedback": "none"}, {"feedback": None}, {"feedback": 0.0}),
        ({"feedback": [0, "none"]}, {"feedback": None}, {"feedback": 1.0}),
        ({"reason": "Incorrect"}, {"reason": "incorrect"}, {"reason": "Too slow"}),
        ({"reason": ["Incorrect", "Unsafe"]}, {"reason": "Unsafe"}, {"reason": None}),
        ({"status": "ERROR"}, {"status": "ERROR"}, {"status": "OK"}),
        ({"tags": ["beta", "smolagents-chat"]}, {}, {"tags": ["beta"]}),
        ({"tool": "web_search"}, {}, {"tools": []}),
        ({"tool": ["lookup", "web_search"]}, {"tools": ["lookup"]}, {"tools": ["final_answer"]}),
        ({"model": "gpt-x"}, {}, {"model": None}),
        ({"user_id": ["bob", "alice"]}, {}, {"user_id": "carol"}),
        ({"metadata": {"provider": "hf"}}, {}, {"metadata": {"provider": "openai"}}),
        ({"metadata": {"provider": "hf", "extra": 1}}, {"metadata": {"provider": "hf", "extra": 1}}, {}),
        ({"min_latency_ms": 1000}, {"latency_ms": 1000.0}, {"latency_ms": 999.0}),
        ({"min_latency_ms": 1000}, {}, {"latency_ms": None}),
    ],
)
def test_each_filter_condition(filter_, yes, no):
    assert matches(filter_, turn(**yes))
    assert not matches(filter_, turn(**no))


def test_every_condition_must_hold_and_no_filter_matches_all():
    both = {"feedback": 0, "status": "ERROR"}
    assert matches(both, turn(feedback=0.0, status="ERROR"))
    assert not matches(both, turn(feedback=0.0, status="OK"))
    assert matches({}, turn())


def test_a_conversation_condition_holds_when_any_turn_has_it():
    talk = ConversationData(
        session_id="s",
        turns=[turn(feedback=1.0, status="OK"), turn(feedback=None, status="ERROR", tools=["lookup"])],
    )
    assert matches({"feedback": 1}, talk) and matches({"feedback": "none"}, talk)
    assert not matches({"feedback": 0}, talk)
    # Each condition on its own: one turn is liked, another one failed.
    assert matches({"feedback": 1, "status": "ERROR", "tool": "lookup"}, talk)
    assert not matches({"feedback": 1}, ConversationData(session_id="s"))


def test_uses_feedback_follows_the_filter_and_the_prompt():
    assert not Evaluator(name="a", prompt="{input} {output}").uses_feedback
    assert Evaluator(name="a", prompt="{input} {feedback}").uses_feedback
    assert Evaluator(name="a", prompt="{reason}").uses_feedback
    assert Evaluator(name="a", prompt="{comment}").uses_feedback
    assert Evaluator(name="a", prompt="{input}", filter={"feedback": 0}).uses_feedback
    assert Evaluator(name="a", prompt="{input}", filter={"reason": "Incorrect"}).uses_feedback
    assert not Evaluator(name="a", prompt="{{feedback}} {input}").uses_feedback
    assert not Evaluator(name="a", prompt="{input}", filter={"status": "OK"}).uses_feedback


# ----- sampling ---------------------------------------------------------------------------


def test_sampling_is_deterministic_and_takes_about_the_right_share():
    evaluator = Evaluator(name="helpfulness", prompt="{input}", sampling_rate=0.3)
    ids = [f"{n:032x}" for n in range(10_000)]
    first = [evaluator.sampled(i) for i in ids]
    assert first == [evaluator.sampled(i) for i in ids]
    assert 0.28 <= sum(first) / len(ids) <= 0.32
    # A new version (another prompt) picks the same targets; another evaluator other ones.
    edited = Evaluator(name="helpfulness", prompt="{input} {output}", sampling_rate=0.3)
    assert edited.version != evaluator.version
    assert [edited.sampled(i) for i in ids] == first
    other = Evaluator(name="tone", prompt="{input}", sampling_rate=0.3)
    assert [other.sampled(i) for i in ids] != first
    # A higher rate keeps every target a lower one took.
    wider = Evaluator(name="helpfulness", prompt="{input}", sampling_rate=0.6)
    assert all(wider.sampled(i) for i, taken in zip(ids, first, strict=True) if taken)


def test_sampling_rate_zero_takes_none_and_one_takes_all():
    ids = [str(n) for n in range(1000)]
    assert not any(Evaluator(name="a", prompt="{input}", sampling_rate=0).sampled(i) for i in ids)
    assert all(Evaluator(name="a", prompt="{input}", sampling_rate=1).sampled(i) for i in ids)
