"""VARIANTS_FILE: the experiment's file checked at start (one sentence naming the file, variant and
key), each variant's settings, the banner, and sticky assignment: the same in every session, in a
new process (another PYTHONHASHSEED), close to the weights over 10,000 users, and a weight change
moves only the users it must."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scipy.stats import chi2

from config.settings import SettingsError, settings_from_env
from config.variants import Experiment, assign

ROOT = Path(__file__).resolve().parents[2]

TWO = """
[experiment]
name = "exp1"
salt = "s1"
control = "a"

[[variant]]
name = "a"
weight = 50

[[variant]]
name = "b"
weight = 50
"""

GOOD_TEMPLATES = """
system_prompt: |-
  You are B. {{ custom_instructions }} Tools: {% for tool in tools.values() %}{{ tool.name }} {% endfor %}
planning:
  initial_plan: "plan {{ task }}"
  update_plan_pre_messages: "pre"
  update_plan_post_messages: "post"
managed_agent:
  task: "t"
  report: "r"
final_answer:
  pre_messages: "p"
  post_messages: "q {{ task }}"
"""


def _file(tmp_path: Path, text: str, name: str = "variants.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _load(tmp_path: Path, text: str, **env: str) -> Experiment:
    settings = settings_from_env({"VARIANTS_FILE": str(_file(tmp_path, text)), **env})
    assert settings.experiment is not None
    return settings.experiment


def _b(extra: str) -> str:
    """TWO with lines added to variant b."""
    return TWO + textwrap.dedent(extra)


# ----- the file's mistakes ------------------------------------------------------------------------

BAD = [
    # (file text, words the sentence must hold besides the file's path)
    (_b('colour = "red"'), ['variant "b"', "unknown key 'colour'"]),
    (TWO + "\n[extra]\nx = 1\n", ["unknown top-level key 'extra'"]),
    (TWO.replace('salt = "s1"', 'salt = "s1"\nseed = 3'), ["[experiment]", "unknown key 'seed'"]),
    (TWO.replace("weight = 50", "weight = 0"), ["every variant's weight is 0"]),
    (TWO.replace('name = "b"', 'name = "a"'), ["two variants are named 'a'"]),
    (TWO.replace('control = "a"\n', ""), ["[experiment]", "control is missing", "'a', 'b'"]),
    (TWO.replace('control = "a"', 'control = "z"'), ["control = 'z' is not a variant"]),
    (
        TWO.replace('name = "a"\nweight = 50', 'name = "a"\nweight = 50\npaused = true'),
        ['variant "a"', "control cannot be paused"],
    ),
    (_b('model_provider = "anthropic"'), ['variant "b"', "model_provider must be one of local, hf, openai"]),
    (_b('tools = ["web_search", "shell"]'), ['variant "b"', "tools", "unknown tool 'shell'"]),
    (
        _b('prompt_templates = "missing.yaml"'),
        ['variant "b"', "prompt_templates", "missing.yaml", "does not exist"],
    ),
    (
        _b('prompt_templates = "broken.yaml"'),
        ['variant "b"', "prompt_templates", "broken.yaml", "not valid YAML"],
    ),
    (
        _b('prompt_templates = "partial.yaml"'),
        ['variant "b"', "prompt_templates", "no 'final_answer' template"],
    ),
    (_b('system_prompt = "Hello {{ name"'), ['variant "b"', "system_prompt", "not a valid Jinja template"]),
    (_b('system_prompt = "Hello {{ user_name }}"'), ['variant "b"', "system_prompt", "{{ user_name }}"]),
    (_b('system_prompt = "x"\nprompt_templates = "good.yaml"'), ['variant "b"', "cannot both be given"]),
    (TWO.replace("weight = 50", "weight = -1", 1), ['variant "a"', "weight must be a number of 0 or more"]),
    (TWO.replace("weight = 50", "weight = true", 1), ['variant "a"', "weight must be a number"]),
    (TWO.replace("weight = 50\n", "", 1), ['variant "a"', "weight is missing"]),
    (
        _b('openai_api_key = "sk-secret"'),
        ['variant "b"', "openai_api_key", "does not belong in a file", "openai_api_key_env"],
    ),
    (
        _b('model_provider = "openai"\nopenai_api_key_env = "NOT_SET_ANYWHERE"'),
        ['variant "b"', "openai_api_key_env", "NOT_SET_ANYWHERE", "not set"],
    ),
    (_b("temperature = 3"), ['variant "b"', "temperature must be a number from 0 to 2"]),
    (_b("max_steps = 0"), ['variant "b"', "max_steps must be a whole number of at least 1"]),
    (_b('model_id = "m"'), ['variant "b"', "model_id has no effect with the local provider"]),
    (
        _b('model_provider = "hf"\nopenai_base_url = "http://127.0.0.1:9/v1"'),
        ['variant "b"', "openai_base_url is for the openai provider, but this variant's provider is hf"],
    ),
    (TWO.replace('name = "b"', 'name = "b c"'), ['variant "b c"', "name must be 1 to 64 letters"]),
    (
        TWO.split("[[variant]]")[0] + '[[variant]]\nname = "a"\nweight = 1\n',
        ["at least two [[variant]] tables"],
    ),
    ("[experiment\nname = 1", ["not valid TOML"]),
    (TWO.replace('name = "exp1"\n', ""), ["[experiment]", "name is missing"]),
]


@pytest.mark.parametrize("text, words", BAD, ids=[w[-1][:40] for _, w in BAD])
def test_each_mistake_is_one_sentence_naming_file_variant_and_key(tmp_path, text, words):
    (tmp_path / "broken.yaml").write_text("system_prompt: [unclosed\n")
    (tmp_path / "partial.yaml").write_text(
        "system_prompt: hi\nplanning: {initial_plan: a, update_plan_pre_messages: b, update_plan_post_messages: c}\nmanaged_agent: {task: t, report: r}\n"
    )
    (tmp_path / "good.yaml").write_text(GOOD_TEMPLATES)
    path = _file(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        settings_from_env({"VARIANTS_FILE": str(path)})
    message = str(caught.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    assert "\n" not in message and message.endswith("."), message
    assert "sk-secret" not in message


def test_a_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(
        SettingsError, match=r"VARIANTS_FILE: the variants file .*nowhere.toml does not exist\."
    ):
        settings_from_env({"VARIANTS_FILE": str(tmp_path / "nowhere.toml")})


@pytest.mark.parametrize("value", [None, "", "off", "none"])
def test_no_file_is_todays_single_agent(value):
    env = {} if value is None else {"VARIANTS_FILE": value}
    settings = settings_from_env(env)
    assert settings.experiment is None and settings.variants_file is None
    assert settings.describe()["experiment"] is None


# ----- what a variant changes ---------------------------------------------------------------------


def test_a_variant_is_the_apps_settings_with_its_values(tmp_path, monkeypatch):
    (tmp_path / "good.yaml").write_text(GOOD_TEMPLATES)
    experiment = _load(
        tmp_path,
        TWO
        + textwrap.dedent(
            """
            model_provider = "openai"
            openai_base_url = "http://127.0.0.1:9/v1"
            openai_api_key_env = "B_KEY"
            temperature = 0.4
            tools = ["web_search"]
            prompt_templates = "good.yaml"
            instructions = "Answer in one line."

            [[variant]]
            name = "c"
            weight = 10
            paused = true
            max_steps = 2
            memory_turns = 1
            system_prompt = "Short. {{ custom_instructions }}"
            """
        ),
        B_KEY="sk-b-TOPSECRET",
        MAX_CONCURRENT_TURNS="7",
    )
    a, b, c = experiment.variants
    assert (a.settings.model_provider, a.settings.max_steps, a.settings.memory_turns) == ("local", 3, 3)
    assert a.changes == () and a.describe() == "the app's settings"
    # b switched provider: that provider's defaults (model id, steps, memory) unless it says otherwise.
    s = b.settings
    assert (s.model_provider, s.model_id, s.openai_base_url, s.openai_api_key) == (
        "openai",
        "gpt-4o-mini",
        "http://127.0.0.1:9/v1",
        "sk-b-TOPSECRET",
    )
    assert (s.max_steps, s.memory_turns, s.agent_tools, s.max_concurrent_turns) == (6, 0, ("web_search",), 7)
    assert s.provider_reason == "variant 'b' sets model_provider"
    assert b.temperature == 0.4 and b.changes_model and b.prompt_templates == tmp_path / "good.yaml"
    assert b.templates({"system_prompt": "default"})["system_prompt"].startswith("You are B.")
    assert b.instructions == "Answer in one line."
    assert (c.settings.max_steps, c.settings.memory_turns, c.paused, c.changes_model) == (2, 1, True, False)
    assert c.templates({"system_prompt": "x", "planning": {}})["system_prompt"].startswith("Short.")
    # The key only as a secret: never in the banner, describe() or a repr.
    settings = settings_from_env({"VARIANTS_FILE": str(experiment.path), "B_KEY": "sk-b-TOPSECRET"})
    assert "sk-b-TOPSECRET" in settings.secrets()
    for text in (repr(settings), str(settings.describe()), "\n".join(experiment.banner()), repr(experiment)):
        assert "sk-b-TOPSECRET" not in text
    # Hosted variants make agent processes the default, for every variant alike.
    assert settings.agent_processes >= 1 and {
        v.settings.agent_processes for v in settings.experiment.variants
    } == {settings.agent_processes}


def test_the_banner_lists_experiment_variants_weights_paused_and_control(tmp_path):
    experiment = _load(
        tmp_path, TWO + '\n[[variant]]\nname = "c"\nweight = 25\npaused = true\nmax_steps = 2\n'
    )
    lines = experiment.banner({"a": "local SmolLM2", "b": "local SmolLM2", "c": "local SmolLM2"})
    assert lines[0].startswith("Experiment 'exp1'") and "control 'a'" in lines[0] and "3 variants" in lines[0]
    assert (
        "variant 'a' [control]: weight 50 (40.0% of users)" in lines[1] and "the app's settings" in lines[1]
    )
    assert "variant 'b': weight 50 (40.0% of users)" in lines[2]
    assert "variant 'c': weight 25 (20.0% of users) PAUSED: its users get 'a'" in lines[3]
    assert "max_steps=2" in lines[3] and "model local SmolLM2" in lines[3]


# ----- who gets which -----------------------------------------------------------------------------

USERS = [f"anon-{n:05d}" for n in range(10_000)]


def test_assignment_is_sticky_and_paused_users_get_the_control(tmp_path):
    experiment = _load(tmp_path, TWO + '\n[[variant]]\nname = "c"\nweight = 50\npaused = true\n')
    first = {u: experiment.assign(u) for u in USERS[:2000]}
    # The same user, asked again (a new session), and read again from the file (a restart).
    again = _load(tmp_path, TWO + '\n[[variant]]\nname = "c"\nweight = 50\npaused = true\n')
    assert all(experiment.assign(u) == first[u] == again.assign(u) for u in USERS[:2000])
    paused = [a for a in first.values() if a.assigned == "c"]
    assert 500 < len(paused) < 830  # a third of 2,000
    assert all(
        a.variant == "a" and a.metadata() == {"variant": "a", "experiment": "exp1", "assigned": "c"}
        for a in paused
    )
    assert all(a.tags() == ("variant:a",) for a in paused)
    served = [a for a in first.values() if a.assigned != "c"]
    assert all(a.variant == a.assigned and "assigned" not in a.metadata() for a in served)


def test_assignment_is_the_same_in_another_process(tmp_path):
    """No Python hash() (salted per process): a replica, or the app after a restart, agrees."""
    weights = [("a", 50.0), ("b", 30.0), ("c", 20.0)]
    here = [assign("salt", u, weights) for u in USERS[:500]]
    code = (
        "import json, sys; from config.variants import assign; "
        f"print(json.dumps([assign('salt', u, {weights!r}) for u in {USERS[:500]!r}]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == here


def test_ten_thousand_users_split_as_the_weights_say():
    """Chi-square of the counts against the weights, at the 0.1% level (the ids are fixed, so the
    test is deterministic; a correct hash fails it once in a thousand choices of ids), and each
    share within 1.5 points (3 standard errors of a share near one half over 10,000 users)."""
    for weights in (
        [("a", 50.0), ("b", 50.0)],
        [("a", 50.0), ("b", 30.0), ("c", 20.0)],
        [("x", 1.0), ("y", 9.0)],
    ):
        counts = {name: 0 for name, _ in weights}
        for user in USERS:
            counts[assign("exp-salt", user, weights)] += 1
        total = sum(w for _, w in weights)
        expected = {name: len(USERS) * w / total for name, w in weights}
        statistic = sum((counts[n] - expected[n]) ** 2 / expected[n] for n in counts)
        assert statistic < chi2.ppf(0.999, len(weights) - 1), (weights, counts)
        for name in counts:
            assert abs(counts[name] - expected[name]) / len(USERS) < 0.015, (weights, counts)


def test_changing_the_salt_reshuffles_everyone():
    weights = [("a", 50.0), ("b", 50.0)]
    moved = sum(assign("one", u, weights) != assign("two", u, weights) for u in USERS)
    assert 0.47 < moved / len(USERS) < 0.53  # half land elsewhere, as a fresh coin would put them


def test_a_weight_change_moves_only_the_users_it_must():
    before = {u: assign("s", u, [("a", 50.0), ("b", 50.0)]) for u in USERS}
    after = {u: assign("s", u, [("a", 60.0), ("b", 40.0)]) for u in USERS}
    moves = [(before[u], after[u]) for u in USERS if before[u] != after[u]]
    # 10% of users must move to make 50/50 into 60/40; a reshuffle would move half.
    assert 0.08 < len(moves) / len(USERS) < 0.12
    assert set(moves) == {("b", "a")}  # nobody moves away from the variant that grew
    # Adding a variant takes users only into it; removing it gives back exactly those.
    three = {u: assign("s", u, [("a", 50.0), ("b", 50.0), ("c", 25.0)]) for u in USERS}
    assert all(three[u] in (before[u], "c") for u in USERS)
    assert 0.17 < sum(three[u] == "c" for u in USERS) / len(USERS) < 0.23
    # Neither the listed order nor the pausing of a variant changes anyone's assignment.
    assert all(assign("s", u, [("b", 50.0), ("a", 50.0)]) == before[u] for u in USERS[:1000])


def test_a_zero_weight_variant_gets_nobody():
    assert {assign("s", u, [("a", 1.0), ("b", 0.0)]) for u in USERS[:1000]} == {"a"}
