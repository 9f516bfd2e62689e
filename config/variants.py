"""A/B experiments: variants of the agent in a file (VARIANTS_FILE), and which one each user gets.

THE FILE (TOML), read and checked once at start; any mistake stops the app with one sentence that
names the file, the variant and the key:

    [experiment]
    name = "shorter-prompt"        # on every trace (metadata `experiment`)
    salt = "2026-06"               # optional (default: the name); changing it reshuffles everyone
    control = "baseline"           # the variant the others are compared with

    [[variant]]
    name = "baseline"              # letters, digits, '-', '_', '.'; on every trace (`variant:<name>`)
    weight = 50                    # share of users: weight / the sum of all weights (paused ones too)

    [[variant]]
    name = "short"
    weight = 50
    paused = false                 # true: its users are served the control (and stay assigned to it)
    system_prompt = "..."          # what differs; anything not given is the app's setting

What a variant may change: the model (`model_provider`, `model_id`, `openai_base_url`,
`local_model_path`, `local_n_ctx`, `local_max_tokens`, the settings of the same names, and
`openai_api_key_env` / `hf_token_env`: the name of the environment variable holding that variant's
key, never the key itself), its prompts (`system_prompt`, the system prompt template as text,
smolagents' Jinja; or `prompt_templates`, a YAML file of all templates like smolagents'
code_agent.yaml, relative to the variants file; and `instructions`, text smolagents adds to the
system prompt), `temperature`, `max_steps`, `tools` (a list: web_search, visit_webpage) and
`memory_turns`. Each variant's settings are the app's, read again from the same environment with
the variant's values in place of those variables: a variant that switches to another provider gets
that provider's defaults (model id, steps, memory) unless it says otherwise. The judge is the app's
for every variant.

WHO GETS WHICH. The user is who the turn's trace says (`user.id`): the Hugging Face login where
the page has one, else the browser's lasting anonymous id (`anon-<browser id>`); assignment and
analysis then count the same people. The variant is a pure function of (salt, user, variant
names and weights): no state, so it is the same in every session, after a restart and on every
replica, and sha256 (never Python's per-process salted hash()).

How, and why this way: weighted rendezvous hashing (Schindelhauer & Schomaker, "Weighted
distributed hash tables", SPAA 2005; the weighted form of Thaler & Ravishankar's HRW). Each
variant v draws, for the user, u_v = sha256(salt, user, v) as a number in (0, 1) and scores
-ln(u_v) / w_v; the user gets the lowest score. The scores are independent exponentials of rates
w_v, so variant v wins with probability exactly w_v / sum(w). And the user's draws never change
when the weights do, so:

- raising one variant's weight (relative to the others) only lowers that variant's scores: users
  move only INTO it, exactly its gain in share; lowering one only moves its own users out. A change
  of two variants' weights is one such change (only ratios matter): 50/50 -> 60/40 moves 10% of
  users (the minimum possible), where a reshuffle would move half;
- adding a variant moves only the users it takes; removing one moves only its users; the order the
  variants are listed in, and pausing, change nobody's assignment.

Cumulative ranges over one draw in the listed order ([0, w1), [w1, w1+w2), ...) are minimal for two
variants too, but adding a third or removing one from the middle shifts every range after it: 50/50
-> 40/40/20 moves 30% of users there, 20% here. The price of rendezvous hashing: renaming a
variant is removing it and adding another (its users are drawn again), and a change of three or
more weights at once is not always the least possible movement (each single step of it is).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta
import yaml

if TYPE_CHECKING:
    from config.settings import Settings

PROVIDERS = ("local", "hf", "openai")  # config.settings.PROVIDERS (that module imports this one)
KNOWN_TOOLS = ("web_search", "visit_webpage")  # agent.tools.build_tools
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"

EXPERIMENT_KEYS = ("name", "salt", "control")
# A variant's key -> the environment variable (the app's setting) it stands for.
SETTING_KEYS = {
    "model_provider": "MODEL_PROVIDER",
    "model_id": "MODEL_ID",
    "openai_base_url": "OPENAI_BASE_URL",
    "local_model_path": "LOCAL_MODEL_PATH",
    "local_n_ctx": "LOCAL_N_CTX",
    "local_max_tokens": "LOCAL_MAX_TOKENS",
    "max_steps": "MAX_STEPS",
    "memory_turns": "MEMORY_TURNS",
    "tools": "AGENT_TOOLS",
}
# Keys are never written in the file: these name the environment variable that holds one.
KEY_ENV_KEYS = {"openai_api_key_env": "OPENAI_API_KEY", "hf_token_env": "HF_TOKEN"}
PROMPT_KEYS = ("system_prompt", "prompt_templates", "instructions")
VARIANT_KEYS = ("name", "weight", "paused", *SETTING_KEYS, *KEY_ENV_KEYS, *PROMPT_KEYS, "temperature")
# The keys that change the model (a model object passed in by a test or an embedder serves every
# variant that changes none of them).
MODEL_KEYS = (
    "model_provider",
    "model_id",
    "openai_base_url",
    "local_model_path",
    "local_n_ctx",
    "local_max_tokens",
    *KEY_ENV_KEYS,
)
# The fields of Settings a variant may change (taken from its settings as read with its values).
AGENT_FIELDS = (
    "model_provider",
    "provider_reason",
    "model_id",
    "hf_token",
    "openai_base_url",
    "openai_api_key",
    "local_model_path",
    "local_n_ctx",
    "local_max_tokens",
    "agent_tools",
    "max_steps",
    "memory_turns",
    # Its default follows the provider; config.settings then gives every variant the app's count.
    "agent_processes",
)
# smolagents' PromptTemplates (smolagents.agents.EMPTY_PROMPT_TEMPLATES): what a templates file needs.
TEMPLATE_KEYS: dict[str, tuple[str, ...]] = {
    "system_prompt": (),
    "planning": ("initial_plan", "update_plan_pre_messages", "update_plan_post_messages"),
    "managed_agent": ("task", "report"),
    "final_answer": ("pre_messages", "post_messages"),
}
# What smolagents gives the system prompt template (CodeAgent.initialize_system_prompt).
SYSTEM_PROMPT_VARIABLES = frozenset(
    {
        "tools",
        "managed_agents",
        "authorized_imports",
        "custom_instructions",
        "code_block_opening_tag",
        "code_block_closing_tag",
    }
)

# The root span's metadata keys and the tag prefix (feedback.exporter reads the same names).
VARIANT_KEY, EXPERIMENT_KEY, ASSIGNED_KEY = "variant", "experiment", "assigned"
TAG_PREFIX = "variant:"


class VariantsError(ValueError):
    """The variants file cannot be used; the message is one sentence naming the file, variant, key."""


@dataclass(frozen=True)
class Variant:
    """One version of the agent: its traffic weight and what differs from the app's settings."""

    name: str
    weight: float
    paused: bool
    # The app's settings with this variant's model and agent values (the rest: the app's own).
    settings: Settings = field(repr=False)
    temperature: float | None = None
    system_prompt: str | None = field(default=None, repr=False)
    prompt_templates: Path | None = None
    # The templates file's text, read once at start (agent processes get it with the settings).
    templates_text: str | None = field(default=None, repr=False)
    instructions: str | None = field(default=None, repr=False)
    # What the file changes, as (key, shown value), for the banner; keys never shown.
    changes: tuple[tuple[str, str], ...] = ()

    @property
    def changes_model(self) -> bool:
        return any(key in MODEL_KEYS for key, _ in self.changes)

    def templates(self, default: Mapping[str, Any]) -> dict[str, Any]:
        """The prompt templates this variant's agents use, given the app's for its model."""
        if self.templates_text is not None:
            return yaml.safe_load(self.templates_text)
        if self.system_prompt is not None:
            return {**default, "system_prompt": self.system_prompt}
        return dict(default)

    def describe(self) -> str:
        """What differs, in a few words: "model_id=x, temperature=0.2" (or "the app's settings")."""
        return ", ".join(f"{key}={value}" for key, value in self.changes) or "the app's settings"


@dataclass(frozen=True)
class Assignment:
    """A user's place in an experiment: the variant they belong to and the one they are served
    (the control while theirs is paused)."""

    experiment: str
    assigned: str
    variant: str

    @property
    def redirected(self) -> bool:
        return self.assigned != self.variant

    def metadata(self) -> dict[str, str]:
        """The root span's metadata: `variant` (served), `experiment`, and `assigned` when paused."""
        data = {VARIANT_KEY: self.variant, EXPERIMENT_KEY: self.experiment}
        if self.redirected:
            data[ASSIGNED_KEY] = self.assigned
        return data

    def tags(self) -> tuple[str, ...]:
        return (f"{TAG_PREFIX}{self.variant}",)


@dataclass(frozen=True)
class Experiment:
    """The variants file, checked: its experiment, the variants in file order and the control."""

    name: str
    salt: str
    control: str
    variants: tuple[Variant, ...]
    path: Path

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def share(self, name: str) -> float:
        """The share of users assigned to this variant (paused or not)."""
        total = sum(v.weight for v in self.variants)
        return self.variant(name).weight / total

    def assign(self, user_id: str) -> Assignment:
        """The user's variant (sticky: a function of the salt, the user and the weights only)."""
        assigned = assign(self.salt, user_id, [(v.name, v.weight) for v in self.variants])
        served = self.control if self.variant(assigned).paused else assigned
        return Assignment(self.name, assigned, served)

    def banner(self, models: Mapping[str, str] | None = None) -> list[str]:
        """The start banner's lines: the experiment, each variant's weight and share, its model
        (`models`: by variant name, when known), what it changes, which are paused, the control."""
        lines = [
            f"Experiment {self.name!r} ({self.path}): {len(self.variants)} variants, control "
            f"{self.control!r}; each user keeps their variant (salt {'= the name' if self.salt == self.name else 'set'})"
        ]
        for v in self.variants:
            role = " [control]" if v.name == self.control else ""
            paused = f" PAUSED: its users get {self.control!r}" if v.paused else ""
            model = f"; model {models[v.name]}" if models and v.name in models else ""
            lines.append(
                f"  variant {v.name!r}{role}: weight {v.weight:g} ({100 * self.share(v.name):.1f}% of users)"
                f"{paused}{model}; {v.describe()}"
            )
        return lines

    def describe(self) -> dict[str, object]:
        """For Settings.describe(): names, weights, paused ones and the control (no settings)."""
        return {
            "name": self.name,
            "control": self.control,
            "variants": [
                {"name": v.name, "weight": v.weight, "paused": v.paused, "changes": v.describe()}
                for v in self.variants
            ],
        }

    def secrets(self) -> list[str]:
        return [s for v in self.variants for s in v.settings.secrets()]


# ----- assignment ------------------------------------------------------------------------------


def uniform(salt: str, user_id: str, variant: str) -> float:
    """The user's draw for this variant: sha256 of the three (JSON: no two triples collide) as a
    number strictly between 0 and 1."""
    digest = hashlib.sha256(json.dumps([salt, user_id, variant]).encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def assign(salt: str, user_id: str, weights: Sequence[tuple[str, float]]) -> str:
    """The variant (by name) of this user: weighted rendezvous hashing (see the module's text).
    Variants of weight 0 get nobody; at least one weight must be above 0."""
    best, best_score = "", math.inf
    for name, weight in weights:
        if weight <= 0:
            continue
        score = -math.log(uniform(salt, user_id, name)) / weight
        if score < best_score:
            best, best_score = name, score
    if not best:
        raise ValueError("every weight is 0")
    return best


# ----- the file ----------------------------------------------------------------------------------


def load_experiment(
    path: Path,
    env: Mapping[str, str],
    base: Settings,
    resolve: Callable[[Mapping[str, str]], Settings],
) -> Experiment:
    """Read and check the variants file. `resolve` reads settings from an environment (each variant's
    are the app's environment with its values in place); `base` are the app's own settings."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VariantsError(f"VARIANTS_FILE: the variants file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VariantsError(f"VARIANTS_FILE: the variants file {path} cannot be read: {exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise VariantsError(f"The variants file {path} is not valid TOML: {exc}.") from None
    for key in data:
        if key not in ("experiment", "variant"):
            raise VariantsError(
                f"In {path}: unknown top-level key {key!r}; the file has an [experiment] table and "
                "[[variant]] tables."
            )
    head = data.get("experiment")
    if not isinstance(head, dict):
        raise VariantsError(f"In {path}: the [experiment] table (name, control, salt) is missing.")
    for key in head:
        if key not in EXPERIMENT_KEYS:
            raise VariantsError(
                f"In {path}, [experiment]: unknown key {key!r}; the keys are {_quoted(EXPERIMENT_KEYS)}."
            )
    name = _name(path, "[experiment]", head.get("name"), "name")
    salt = head.get("salt", name)
    if not isinstance(salt, str) or not salt.strip():
        raise VariantsError(f"In {path}, [experiment]: salt must be a non-empty text, got {salt!r}.")
    tables = data.get("variant")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise VariantsError(
            f"In {path}: the variants must be [[variant]] tables (double brackets), one each."
        )
    if len(tables) < 2:
        raise VariantsError(
            f"In {path}: an experiment needs at least two [[variant]] tables, found {len(tables)}."
        )
    variants: list[Variant] = []
    for number, table in enumerate(tables, start=1):
        variant = _variant(path, number, table, env, base, resolve)
        if any(v.name == variant.name for v in variants):
            raise VariantsError(
                f"In {path}: two variants are named {variant.name!r}; each needs its own name."
            )
        variants.append(variant)
    if not any(v.weight > 0 for v in variants):
        raise VariantsError(f"In {path}: every variant's weight is 0; give at least one a weight above 0.")
    if "control" not in head:
        raise VariantsError(
            f"In {path}, [experiment]: control is missing; name the variant the others are compared with "
            f"(one of {_quoted(v.name for v in variants)})."
        )
    control = head["control"]
    if not any(v.name == control for v in variants):
        raise VariantsError(
            f"In {path}, [experiment]: control = {control!r} is not a variant of the file (they are "
            f"{_quoted(v.name for v in variants)})."
        )
    if next(v for v in variants if v.name == control).paused:
        raise VariantsError(
            f'In {path}, variant "{control}": the control cannot be paused (paused variants\' users are '
            "served the control)."
        )
    return Experiment(name=name, salt=salt, control=str(control), variants=tuple(variants), path=path)


def _quoted(names: Any) -> str:
    return ", ".join(repr(n) for n in names)


def _name(path: Path, where: str, value: Any, key: str) -> str:
    if value is None:
        raise VariantsError(f"In {path}, {where}: {key} is missing ({NAME_RULE}).")
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise VariantsError(f"In {path}, {where}: {key} must be {NAME_RULE}, got {value!r}.")
    return value


def _number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _variant(
    path: Path,
    number: int,
    table: dict[str, Any],
    env: Mapping[str, str],
    base: Settings,
    resolve: Callable[[Mapping[str, str]], Settings],
) -> Variant:
    raw_name = table.get("name")
    where = (
        f'variant "{raw_name}"' if isinstance(raw_name, str) and raw_name else f"variant #{number} (no name)"
    )

    def fail(key: str, problem: str) -> VariantsError:
        return VariantsError(f"In {path}, {where}: {key} {problem}.")

    for key in table:
        if key in ("openai_api_key", "hf_token"):
            raise fail(
                key,
                f"does not belong in a file; put the key in an environment variable and name it with "
                f'{key}_env = "VARIABLE"',
            )
        if key not in VARIANT_KEYS:
            raise VariantsError(
                f"In {path}, {where}: unknown key {key!r}; the keys are {_quoted(VARIANT_KEYS)}."
            )
    name = _name(path, where, raw_name, "name")
    if "weight" not in table:
        raise fail("weight", "is missing (a number of 0 or more: its share of users is weight / the sum)")
    weight = table["weight"]
    if not _number(weight) or weight < 0:
        raise fail("weight", f"must be a number of 0 or more, got {weight!r}")
    paused = table.get("paused", False)
    if not isinstance(paused, bool):
        raise fail("paused", f"must be true or false, got {paused!r}")

    overlay: dict[str, str] = {}
    changes: list[tuple[str, str]] = []
    for key, variable in SETTING_KEYS.items():
        if key not in table:
            continue
        value = table[key]
        overlay[variable] = _setting_text(key, value, fail)
        changes.append((key, overlay[variable] if key != "openai_base_url" else _masked(overlay[variable])))
    for key, variable in KEY_ENV_KEYS.items():
        if key not in table:
            continue
        source = table[key]
        if not isinstance(source, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source):
            raise fail(key, f"must be the name of an environment variable, got {source!r}")
        if not env.get(source, "").strip():
            raise fail(key, f"names {source}, which is not set (or empty) in the environment")
        overlay[variable] = env[source].strip()
        changes.append((key, source))

    temperature = table.get("temperature")
    if temperature is not None:
        if not _number(temperature) or not 0 <= temperature <= 2:
            raise fail("temperature", f"must be a number from 0 to 2, got {temperature!r}")
        temperature = float(temperature)
        changes.append(("temperature", f"{temperature:g}"))
    if "system_prompt" in table and "prompt_templates" in table:
        raise fail(
            "system_prompt",
            "and prompt_templates cannot both be given (the templates file has a system_prompt)",
        )
    system_prompt = table.get("system_prompt")
    if system_prompt is not None:
        if not isinstance(system_prompt, str) or not system_prompt.strip():
            raise fail("system_prompt", "must be a non-empty text")
        _check_template(system_prompt, "system_prompt", fail, SYSTEM_PROMPT_VARIABLES)
        changes.append(("system_prompt", f"({len(system_prompt)} characters)"))
    templates_path, templates_text = None, None
    if "prompt_templates" in table:
        templates_path, templates_text = _templates_file(path, table["prompt_templates"], fail)
        changes.append(("prompt_templates", str(templates_path)))
    instructions = table.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str) or not instructions.strip():
            raise fail("instructions", "must be a non-empty text")
        changes.append(("instructions", f"({len(instructions)} characters)"))

    try:
        resolved = resolve({**env, **overlay})
    except ValueError as exc:  # SettingsError: the value read as its setting was refused
        raise VariantsError(f"In {path}, {where}: {exc}") from None
    settings = dataclasses.replace(base, **{f: getattr(resolved, f) for f in AGENT_FIELDS})
    if "model_provider" in table:
        settings = dataclasses.replace(settings, provider_reason=f"variant {name!r} sets model_provider")
    provider = settings.model_provider
    if "model_id" in table and provider == "local":
        raise fail(
            "model_id", "has no effect with the local provider (local_model_path chooses its GGUF file)"
        )
    if "openai_base_url" in table and provider != "openai":
        raise fail(
            "openai_base_url", f"is for the openai provider, but this variant's provider is {provider}"
        )
    if (
        "local_model_path" in table or "local_n_ctx" in table or "local_max_tokens" in table
    ) and provider != "local":
        key = next(k for k in ("local_model_path", "local_n_ctx", "local_max_tokens") if k in table)
        raise fail(key, f"is for the local provider, but this variant's provider is {provider}")
    if "local_model_path" in table and not Path(settings.local_model_path).is_file():
        raise fail("local_model_path", f"names {settings.local_model_path}, which is not a file")
    return Variant(
        name=name,
        weight=float(weight),
        paused=paused,
        settings=settings,
        temperature=temperature,
        system_prompt=system_prompt,
        prompt_templates=templates_path,
        templates_text=templates_text,
        instructions=instructions,
        changes=tuple(changes),
    )


def _masked(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


def _setting_text(key: str, value: Any, fail: Callable[[str, str], VariantsError]) -> str:
    """A variant's value as the environment variable it stands for would hold it."""
    if key == "model_provider":
        if not isinstance(value, str) or value.strip().lower() not in PROVIDERS:
            raise fail(key, f"must be one of {', '.join(PROVIDERS)}, got {value!r}")
        return value.strip().lower()
    if key == "tools":
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise fail(key, f'must be a list of tool names (e.g. ["web_search"]; [] for none), got {value!r}')
        unknown = [t for t in value if t.lower() not in KNOWN_TOOLS]
        if unknown:
            raise fail(key, f"has the unknown tool {unknown[0]!r} (the tools are {', '.join(KNOWN_TOOLS)})")
        return ",".join(t.lower() for t in value)
    if key in ("local_n_ctx", "local_max_tokens", "max_steps", "memory_turns"):
        minimum = {"local_n_ctx": 512, "local_max_tokens": 16, "max_steps": 1, "memory_turns": 0}[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(key, f"must be a whole number of at least {minimum}, got {value!r}")
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise fail(key, f"must be a non-empty text, got {value!r}")
    if key == "openai_base_url" and not re.fullmatch(r"https?://\S+", value.strip()):
        raise fail(key, "must be an http:// or https:// URL, e.g. http://localhost:11434/v1")
    return value.strip()


def _check_template(
    text: str, key: str, fail: Callable[[str, str], VariantsError], variables: frozenset[str] | None = None
) -> None:
    """A Jinja template smolagents can render: it parses, and (the system prompt) uses only the
    variables smolagents gives it (it renders with StrictUndefined: any other would fail each turn)."""
    environment = jinja2.Environment()
    try:
        parsed = environment.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise fail(key, f"is not a valid Jinja template (line {exc.lineno}: {exc.message})") from None
    if variables is not None:
        unknown = sorted(jinja2.meta.find_undeclared_variables(parsed) - variables)
        if unknown:
            raise fail(
                key,
                f"uses {{{{ {unknown[0]} }}}}, which smolagents does not provide (it provides "
                f"{', '.join(sorted(variables))})",
            )


def _templates_file(path: Path, value: Any, fail: Callable[[str, str], VariantsError]) -> tuple[Path, str]:
    key = "prompt_templates"
    if not isinstance(value, str) or not value.strip():
        raise fail(key, f"must be the path of a YAML file, got {value!r}")
    file = Path(value.strip()).expanduser()
    if not file.is_absolute():
        file = path.parent / file
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(key, f"names {file}, which does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(key, f"names {file}, which cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise fail(key, f"names {file}, which is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise fail(
            key, f"names {file}, which must be a YAML mapping of templates (like smolagents' code_agent.yaml)"
        )
    for top, subkeys in TEMPLATE_KEYS.items():
        if top not in data:
            raise fail(key, f"names {file}, which has no {top!r} template")
        if not subkeys:
            if not isinstance(data[top], str):
                raise fail(key, f"names {file}, whose {top!r} must be a text")
            _check_template(data[top], f"{key} ({file}: {top})", fail, SYSTEM_PROMPT_VARIABLES)
            continue
        if not isinstance(data[top], dict):
            raise fail(key, f"names {file}, whose {top!r} must hold {', '.join(subkeys)}")
        for sub in subkeys:
            if not isinstance(data[top].get(sub), str):
                raise fail(key, f"names {file}, whose {top!r} has no {sub!r} text")
            _check_template(data[top][sub], f"{key} ({file}: {top}.{sub})", fail)
    return file, text
