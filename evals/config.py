"""The evaluators file: which scores the judge writes, on which turns or conversations, how often.

A TOML file of `[[evaluator]]` tables, checked whole when it is loaded: a mistake is one
EvaluatorsError naming the file, the evaluator and the field, before anything is judged.

Each evaluator has a `version`, a short hash of everything that changes its results (the prompt,
the code's file, the filter, the sampling rate...): a score records the version that produced it,
so after an edit old and new scores are never mixed up. `enabled` and `idle_s` only change when
it runs, not what it says, so they are not part of it. Sampling is a hash of (name, target id),
not a random draw: the same trace is always in or out, whatever the version, so a re-run with a
new prompt judges the same traces as the old one did.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from evals.context import (
    MESSAGE_MODES,
    PROMPT_VARIABLES,
    ConversationData,
    TurnData,
    field_text,
    template_fields,
)
from feedback.votes import SCORE_NAME

__all__ = [
    "DATA_TYPES",
    "FILTER_KEYS",
    "KINDS",
    "REVIEW_KINDS",
    "TARGETS",
    "Evaluator",
    "EvaluatorsError",
    "EvaluatorsFile",
    "ReviewConfig",
    "ReviewRule",
    "load_evaluators",
    "load_evaluators_file",
]

KINDS = ("llm", "code")
TARGETS = ("turn", "conversation")
DATA_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")
FILTER_KEYS = (
    "feedback",
    "reason",
    "status",
    "tags",
    "tool",
    "model",
    "user_id",
    "metadata",
    "min_latency_ms",
)
STATUSES = ("OK", "WARNING", "ERROR")
# Keys of an [[evaluator]] table; `idle_s` and `messages` only for conversations.
KEYS = (
    "name",
    "kind",
    "target",
    "data_type",
    "categories",
    "prompt",
    "function",
    "sampling_rate",
    "filter",
    "idle_s",
    "messages",
    "enabled",
)
CONVERSATION_ONLY = ("idle_s", "messages")
# Top-level keys of the file besides the [[evaluator]] tables.
FILE_KEYS = ("evaluator", "demo_judge", "review")
# Prompt variables and filter keys that read the user's rating.
FEEDBACK_FIELDS = frozenset({"feedback", "reason", "comment"})
VERSION_CHARS = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class EvaluatorsError(ValueError):
    """The evaluators file is wrong; the message names the file, the evaluator and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        evaluator: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.evaluator = evaluator
        self.field = field


def _fail(source: Path | None, evaluator: str, field_name: str | None, problem: str) -> EvaluatorsError:
    where = f"In {source}, evaluator {evaluator}" if source is not None else f"Evaluator {evaluator}"
    return EvaluatorsError(f"{where}: {problem}.", path=source, evaluator=evaluator, field=field_name)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _quoted(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


# ----- code evaluators --------------------------------------------------------------------

_FUNCTIONS: dict[tuple[str, str, str], Callable[..., Any]] = {}
_FUNCTIONS_LOCK = threading.Lock()


def _split_function(spec: str) -> tuple[str, str]:
    file_part, _, name = spec.rpartition(":")
    return file_part.strip(), name.strip()


def _load_function(path: Path, name: str, digest: str) -> Callable[..., Any]:
    """The function `name` of the Python file at `path` (loaded once per file content)."""
    key = (str(path), name, digest)
    with _FUNCTIONS_LOCK:
        if key in _FUNCTIONS:
            return _FUNCTIONS[key]
        stem = re.sub(r"\W", "_", path.stem)
        module_name = f"evals_code_{stem}_{digest[:12]}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{path} cannot be imported")
            module = importlib.util.module_from_spec(spec)
            # Registered while it runs, so dataclasses and pickling inside it find their module.
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
        function = getattr(module, name, None)
        if function is None:
            raise AttributeError(f"{path.name} has no function {name!r}")
        if not callable(function):
            raise TypeError(f"{name!r} in {path.name} is not a function")
        _FUNCTIONS[key] = function
        return function


# ----- filters ----------------------------------------------------------------------------


def _strings(value: Any, key: str, fail: Callable[[str, str], EvaluatorsError]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise fail(f"filter.{key}", f"filter {key} must be a string or a list of strings, not {value!r}")
    return tuple(v.strip() for v in items)


def _filter(raw: Any, fail: Callable[[str, str], EvaluatorsError]) -> Mapping[str, Any]:
    """The filter, checked and normalised (lists become tuples; "none" becomes None)."""
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        raise fail("filter", f"filter must be a table such as {{ feedback = 0 }}, not {raw!r}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FILTER_KEYS:
            raise fail(
                "filter",
                f"filter has an unknown condition {key!r}; the conditions are {_quoted(FILTER_KEYS)}",
            )
        if key == "feedback":
            allowed: list[float | None] = []
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item.strip().lower() == "none":
                    allowed.append(None)
                elif _is_number(item) and item in (0, 1):
                    allowed.append(float(item))
                else:
                    raise fail(
                        "filter.feedback",
                        f'filter feedback must be 0 (disliked), 1 (liked), "none" (not rated) or a list of these, '
                        f"not {item!r}",
                    )
            if not allowed:
                raise fail("filter.feedback", "filter feedback must not be an empty list")
            out[key] = tuple(dict.fromkeys(allowed))
        elif key == "status":
            statuses = _strings(value, key, fail)
            if any(s not in STATUSES for s in statuses):
                raise fail(
                    "filter.status", f'filter status must be "OK", "WARNING" or "ERROR", not {value!r}'
                )
            out[key] = statuses
        elif key in ("reason", "tags", "tool", "model", "user_id"):
            out[key] = _strings(value, key, fail)
        elif key == "metadata":
            if not isinstance(value, Mapping) or not value:
                raise fail("filter.metadata", f"filter metadata must be a non-empty table, not {value!r}")
            for meta_key, meta_value in value.items():
                if not isinstance(meta_value, str | int | float | bool):
                    raise fail(
                        "filter.metadata",
                        f"filter metadata {meta_key!r} must be a string, number or boolean, not {meta_value!r}",
                    )
            out[key] = MappingProxyType(dict(value))
        elif key == "min_latency_ms":
            if not _is_number(value) or value < 0:
                raise fail(
                    "filter.min_latency_ms",
                    f"filter min_latency_ms must be a number of 0 or more, not {value!r}",
                )
            out[key] = float(value)
    return MappingProxyType(out)


def _holds(key: str, wanted: Any, turn: TurnData) -> bool:
    """Whether one filter condition holds for one turn."""
    if key == "feedback":
        return turn.feedback in wanted
    if key == "reason":
        return turn.reason is not None and turn.reason.strip().casefold() in {r.casefold() for r in wanted}
    if key == "status":
        return turn.status in wanted
    if key == "tags":
        return set(wanted) <= set(turn.tags)
    if key == "tool":
        return any(t in turn.tools for t in wanted)
    if key == "model":
        return turn.model in wanted
    if key == "user_id":
        return turn.user_id in wanted
    if key == "metadata":
        return all(k in turn.metadata and turn.metadata[k] == v for k, v in wanted.items())
    if key == "min_latency_ms":
        return turn.latency_ms is not None and turn.latency_ms >= wanted
    raise KeyError(key)


def _plain(value: Any) -> Any:
    """A filter value as JSON (for the version hash)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# ----- the evaluator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluator:
    """One score the judge writes: what it looks at, how it decides, and on which targets.

    Building one checks it (EvaluatorsError); `source` is the evaluators file, the folder a
    code evaluator's `function` file is relative to (the working directory when None).
    """

    name: str
    kind: str = "llm"
    target: str = "turn"
    data_type: str = "NUMERIC"
    prompt: str | None = None
    function: str | None = None
    categories: tuple[str, ...] = ()
    sampling_rate: float = 1.0
    filter: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    idle_s: float = 600.0
    messages: str = "all"
    enabled: bool = True
    source: Path | None = field(default=None, compare=False, repr=False)
    version: str = field(init=False)
    _function_digest: str | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        label = f'"{self.name}"' if isinstance(self.name, str) and self.name else "(no name)"

        def fail(field_name: str, problem: str) -> EvaluatorsError:
            return _fail(self.source, label, field_name, problem)

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise fail(
                "name",
                f"name must be 1 to 100 letters, digits, '_', '-' or '.', starting with a letter or digit, "
                f"not {self.name!r}",
            )
        if self.name == SCORE_NAME:
            raise fail("name", f'name "{SCORE_NAME}" is the users\' own rating; choose another score name')
        if self.kind not in KINDS:
            raise fail("kind", f"kind must be {_quoted(KINDS)}, not {self.kind!r}")
        if self.target not in TARGETS:
            raise fail("target", f"target must be {_quoted(TARGETS)}, not {self.target!r}")
        if self.data_type not in DATA_TYPES:
            raise fail("data_type", f"data_type must be {_quoted(DATA_TYPES)}, not {self.data_type!r}")

        categories = self.categories
        if isinstance(categories, list | tuple):
            if not all(isinstance(c, str) and c.strip() for c in categories):
                raise fail(
                    "categories", f"categories must be a list of non-empty strings, not {list(categories)!r}"
                )
            if len(set(categories)) != len(categories):
                raise fail("categories", f"categories has a category twice: {list(categories)!r}")
            put("categories", tuple(categories))
        else:
            raise fail("categories", f"categories must be a list of strings, not {categories!r}")
        if self.data_type == "CATEGORICAL" and not self.categories:
            raise fail("categories", 'a CATEGORICAL evaluator needs categories = ["...", ...]')
        if self.data_type != "CATEGORICAL" and self.categories:
            raise fail("categories", f"categories are for CATEGORICAL evaluators only, not {self.data_type}")

        if self.kind == "llm":
            if self.function is not None:
                raise fail("function", 'function is for kind = "code"; an llm evaluator has a prompt')
            if not isinstance(self.prompt, str) or not self.prompt.strip():
                raise fail("prompt", "an llm evaluator needs a prompt")
            try:
                fields = template_fields(self.prompt)
            except ValueError as exc:
                raise fail(
                    "prompt",
                    f"the prompt is not a valid template ({exc}); write literal braces as {{{{ and }}}}",
                ) from None
            for name, spec, conversion in fields:
                if name not in PROMPT_VARIABLES:
                    raise fail(
                        "prompt",
                        f"the prompt uses {field_text(name, spec, conversion)}, which is not a variable; "
                        "the variables are "
                        + ", ".join(f"{{{v}}}" for v in PROMPT_VARIABLES)
                        + " (literal braces are written {{ and }})",
                    )
                if spec or conversion:
                    raise fail(
                        "prompt",
                        f"the prompt's {field_text(name, spec, conversion)} has a format spec or a conversion; "
                        f"write a plain {{{name}}}",
                    )
        else:
            if self.prompt is not None:
                raise fail("prompt", 'prompt is for kind = "llm"; a code evaluator has a function')
            put("_function_digest", self._check_function(fail))

        rate = self.sampling_rate
        if not _is_number(rate) or not 0 <= rate <= 1:
            raise fail("sampling_rate", f"sampling_rate must be a number from 0 to 1, not {rate!r}")
        put("sampling_rate", float(rate))
        if not _is_number(self.idle_s) or self.idle_s <= 0:
            raise fail("idle_s", f"idle_s must be a number of seconds above 0, not {self.idle_s!r}")
        put("idle_s", float(self.idle_s))
        if self.messages not in MESSAGE_MODES:
            raise fail("messages", f"messages must be {_quoted(MESSAGE_MODES)}, not {self.messages!r}")
        if not isinstance(self.enabled, bool):
            raise fail("enabled", f"enabled must be true or false, not {self.enabled!r}")
        put("filter", _filter(self.filter, fail))
        put("version", self._version())

    # -- code functions

    def _function_path(self) -> tuple[Path, str]:
        file_part, name = _split_function(str(self.function))
        base = self.source.parent if self.source is not None else Path.cwd()
        return (base / file_part).resolve(), name

    def _check_function(self, fail: Callable[[str, str], EvaluatorsError]) -> str:
        """Load the code function once now (a broken file fails at load time); its file's hash."""
        spec = self.function
        if not isinstance(spec, str) or not spec.strip():
            raise fail("function", 'a code evaluator needs function = "file.py:function_name"')
        file_part, name = _split_function(spec)
        if not file_part or not name or not name.isidentifier():
            raise fail("function", f'function must look like "checks.py:no_error", not {spec!r}')
        path, _ = self._function_path()
        if path.suffix != ".py":
            raise fail("function", f"function's file must be a .py file, not {file_part!r}")
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise fail("function", f"function's file {path} cannot be read ({exc.strerror or exc})") from None
        digest = hashlib.sha256(content).hexdigest()
        try:
            _load_function(path, name, digest)
        except (AttributeError, TypeError) as exc:
            raise fail("function", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any error in the operator's file is reported as theirs
            raise fail("function", f"loading {path.name} failed: {type(exc).__name__}: {exc}") from None
        return digest

    def function_callable(self) -> Callable[..., Any]:
        """The code evaluator's function (loaded once, the version that was checked at load time)."""
        if self.kind != "code" or self._function_digest is None:
            raise EvaluatorsError(f'Evaluator "{self.name}" is not a code evaluator; it has no function.')
        path, name = self._function_path()
        return _load_function(path, name, self._function_digest)

    # -- version, filter, sampling

    def _version(self) -> str:
        function = None
        if self.kind == "code":
            function = {"name": _split_function(str(self.function))[1], "file_sha256": self._function_digest}
        parts = {
            "kind": self.kind,
            "target": self.target,
            "data_type": self.data_type,
            "categories": list(self.categories),
            "prompt": self.prompt,
            "function": function,
            "messages": self.messages,
            "filter": _plain(self.filter),
            "sampling_rate": self.sampling_rate,
        }
        canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_CHARS]

    @property
    def uses_feedback(self) -> bool:
        """Whether its filter or prompt reads the user's rating (so a new rating may change it)."""
        if FEEDBACK_FIELDS & set(self.filter):
            return True
        return bool(FEEDBACK_FIELDS & {name for name, _, _ in template_fields(self.prompt or "")})

    def matches(self, data: TurnData | ConversationData) -> bool:
        """Whether every filter condition holds; for a conversation, each one for any of its turns."""
        turns = data.turns if isinstance(data, ConversationData) else [data]
        return all(any(_holds(key, wanted, t) for t in turns) for key, wanted in self.filter.items())

    def sampled(self, target_id: str) -> bool:
        """Whether this target is in the sample: a hash of (name, target id), the same every time."""
        if self.sampling_rate >= 1.0:
            return True
        digest = hashlib.sha256(f"{self.name}\x00{target_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.sampling_rate


# ----- the file ---------------------------------------------------------------------------


# ----- the review queue's rules ----------------------------------------------------------

# What puts a turn in the review queue (evals.review_rules applies them):
#   dislike       every dislike (or those with one of `reasons`)
#   disagreement  a judge and the user disagree: the judge's score >= `threshold` on a disliked
#                 turn, or < `threshold` on a liked one (`evaluators`: which judges; default every
#                 NUMERIC or BOOLEAN LLM judge of turns)
#   low-score     the judge `evaluator` scored the turn below `below`
#   sample        a random `rate` of turns, drawn when the turn arrives (before anyone rated it):
#                 the calibration sample the corrected quality estimate rests on
REVIEW_KINDS = ("dislike", "disagreement", "low-score", "sample")
REVIEW_KEYS = ("lease_minutes", "labels", "rule")
RULE_KEYS = ("name", "kind", "evaluators", "evaluator", "threshold", "below", "rate", "reasons", "enabled")
# Keys each kind takes besides name, kind and enabled.
RULE_KIND_KEYS = {
    "dislike": ("reasons",),
    "disagreement": ("evaluators", "threshold"),
    "low-score": ("evaluator", "below"),
    "sample": ("rate",),
}
MANUAL_QUEUE = "manual"  # feedback.review_queue.MANUAL: the queue of traces added by hand
LABEL_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")


@dataclass(frozen=True)
class ReviewRule:
    """One rule: a queue of its own name, filled with the turns for which it holds."""

    name: str
    kind: str
    evaluators: tuple[str, ...] = ()
    threshold: float = 0.5
    below: float = 0.5
    rate: float = 0.0
    reasons: tuple[str, ...] = ()
    enabled: bool = True

    @property
    def calibration(self) -> bool:
        """Its items are the random calibration sample (drawn, not chosen)."""
        return self.kind == "sample"

    def sampled(self, trace_id: str) -> bool:
        """Whether a turn is in this sample: a hash of (rule name, trace id), the same every time
        and independent of anything about the turn, so the sample is a uniform random draw."""
        if self.rate >= 1.0:
            return True
        digest = hashlib.sha256(f"{self.name}\x00{trace_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate


@dataclass(frozen=True)
class ReviewConfig:
    """The file's [review] table: the rules, how long a reviewer holds an item, and which judges'
    score names a reviewer labels (`labels`; default every LLM judge of turns)."""

    rules: tuple[ReviewRule, ...] = ()
    lease_s: float = 1800.0
    labels: tuple[str, ...] | None = None

    @property
    def enabled_rules(self) -> tuple[ReviewRule, ...]:
        return tuple(r for r in self.rules if r.enabled)


def _review_fail(source: Path, rule: str | None, problem: str) -> EvaluatorsError:
    where = f"In {source}, [review]" if rule is None else f"In {source}, review rule {rule}"
    return EvaluatorsError(f"{where}: {problem}.", path=source, evaluator=rule, field="review")


def _judges(evaluators: list[Evaluator]) -> dict[str, Evaluator]:
    """The evaluators whose scores a review rule can read: those of turns, numbers or booleans."""
    return {e.name: e for e in evaluators if e.target == "turn" and e.data_type in ("NUMERIC", "BOOLEAN")}


def _fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _review(raw: Any, evaluators: list[Evaluator], path: Path) -> ReviewConfig:
    """The [review] table, checked against the file's evaluators."""
    if not isinstance(raw, Mapping):
        raise _review_fail(path, None, "review must be a table: [review], with its rules as [[review.rule]]")
    for key in raw:
        if key not in REVIEW_KEYS:
            raise _review_fail(path, None, f"unknown key {key!r}; the keys are {_quoted(REVIEW_KEYS)}")
    minutes = raw.get("lease_minutes", 30)
    if not _is_number(minutes) or minutes <= 0:
        raise _review_fail(path, None, f"lease_minutes must be a number of minutes above 0, not {minutes!r}")
    labels = raw.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise _review_fail(path, None, f"labels must be a list of evaluator names, not {labels!r}")
        by_name = {e.name: e for e in evaluators}
        for name in labels:
            if name not in by_name:
                raise _review_fail(
                    path, None, f"labels names {name!r}, which is not an evaluator of this file"
                )
            if by_name[name].target != "turn":
                raise _review_fail(
                    path, None, f"labels names {name!r}, which judges conversations; a reviewer labels turns"
                )
        labels = tuple(dict.fromkeys(labels))
    tables = raw.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _review_fail(path, None, "rules must be [[review.rule]] tables (double brackets), one per rule")
    judges = _judges(evaluators)
    known = {e.name: e for e in evaluators}
    rules: list[ReviewRule] = []
    for number, table in enumerate(tables, start=1):
        name = table.get("name")
        label = f'"{name}"' if isinstance(name, str) and name else f"#{number} (no name)"

        def fail(problem: str, label: str = label) -> EvaluatorsError:
            return _review_fail(path, label, problem)

        for key in table:
            if key not in RULE_KEYS:
                raise fail(f"unknown key {key!r}; the keys are {_quoted(RULE_KEYS)}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(
                "name must be 1 to 100 letters, digits, '_', '-' or '.', starting with a letter or digit "
                f"(it names the rule's queue), not {name!r}"
            )
        if name == MANUAL_QUEUE:
            raise fail(f'the name "{MANUAL_QUEUE}" is the queue of traces added by hand; choose another')
        if any(r.name == name for r in rules):
            raise fail("another review rule has the same name")
        kind = table.get("kind")
        if kind not in REVIEW_KINDS:
            raise fail(f"kind must be {_quoted(REVIEW_KINDS)}, not {kind!r}")
        for key in table:
            if key not in ("name", "kind", "enabled") and key not in RULE_KIND_KEYS[kind]:
                takes = RULE_KIND_KEYS[kind]
                raise fail(f"{key} is not for a {kind} rule (it takes {_quoted(takes)})")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise fail(f"enabled must be true or false, not {enabled!r}")
        fields: dict[str, Any] = {"name": name, "kind": kind, "enabled": enabled}
        if kind == "dislike":
            reasons = table.get("reasons", [])
            if not isinstance(reasons, list) or not all(isinstance(r, str) and r.strip() for r in reasons):
                raise fail(
                    f'reasons must be a list of dislike reasons such as ["Incorrect"], not {reasons!r}'
                )
            fields["reasons"] = tuple(r.strip() for r in reasons)
        elif kind == "disagreement":
            chosen = table.get("evaluators")
            if chosen is None:
                chosen = [e.name for e in evaluators if e.name in judges and e.kind == "llm" and e.enabled]
                if not chosen:
                    raise fail(
                        "there is no enabled LLM judge of turns with a NUMERIC or BOOLEAN score to disagree "
                        'with; name one with evaluators = ["..."]'
                    )
            elif isinstance(chosen, str):
                chosen = [chosen]
            if not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) for c in chosen):
                raise fail(f"evaluators must be a list of evaluator names, not {table.get('evaluators')!r}")
            for judge_name in chosen:
                _check_judge(judge_name, known, judges, fail)
            threshold = table.get("threshold", 0.5)
            if not _fraction(threshold):
                raise fail(f"threshold must be a number from 0 to 1, not {threshold!r}")
            fields.update(evaluators=tuple(dict.fromkeys(chosen)), threshold=float(threshold))
        elif kind == "low-score":
            judge_name = table.get("evaluator")
            if not isinstance(judge_name, str) or not judge_name:
                raise fail('a low-score rule needs evaluator = "..." (whose score is low)')
            _check_judge(judge_name, known, judges, fail)
            below = table.get("below", 0.5)
            if not _fraction(below):
                raise fail(f"below must be a number from 0 to 1, not {below!r}")
            fields.update(evaluators=(judge_name,), below=float(below))
        else:
            if "rate" not in table:
                raise fail(
                    "a sample rule needs rate = 0.05 (the share of turns drawn, above 0 and at most 1)"
                )
            rate = table["rate"]
            if not _is_number(rate) or not 0 < rate <= 1:
                raise fail(f"rate must be a number above 0 and at most 1 (0.05 is 5% of turns), not {rate!r}")
            fields["rate"] = float(rate)
        rules.append(ReviewRule(**fields))
    samples = [r for r in rules if r.kind == "sample" and r.enabled]
    if len(samples) > 1:
        raise _review_fail(
            path,
            f'"{samples[1].name}"',
            f'a second enabled sample rule; one random calibration sample ("{samples[0].name}") keeps the '
            "corrected estimate's arithmetic plain",
        )
    return ReviewConfig(tuple(rules), float(minutes) * 60.0, labels)


def _check_judge(
    name: str,
    known: Mapping[str, Evaluator],
    judges: Mapping[str, Evaluator],
    fail: Callable[[str], EvaluatorsError],
) -> None:
    if name not in known:
        raise fail(f"{name!r} is not an evaluator of this file")
    if name not in judges:
        e = known[name]
        why = "judges conversations, not turns" if e.target != "turn" else f"writes {e.data_type} scores"
        raise fail(f"{name!r} {why}; a rule compares a turn's NUMERIC or BOOLEAN judge score")


@dataclass(frozen=True)
class EvaluatorsFile:
    """The whole file: its evaluators, whether its LLM judges may run on the demo model, and the
    review queue's rules ([review], see ReviewConfig).

    `demo_judge = true` (top level): with the bundled 135M model as judge, the online LLM
    evaluators run anyway, each score labelled as a demo judge's. Without it they do not run
    there (that model scores "Paris" unsafe); code checks always run.
    """

    evaluators: list[Evaluator]
    demo_judge: bool = False
    review: ReviewConfig = field(default_factory=ReviewConfig)

    def labelled(self) -> list[Evaluator]:
        """The judges whose score names a reviewer labels: [review] labels, or every enabled LLM
        judge of turns, in the file's order."""
        if self.review.labels is not None:
            by_name = {e.name: e for e in self.evaluators}
            return [by_name[n] for n in self.review.labels]
        return [e for e in self.evaluators if e.kind == "llm" and e.target == "turn" and e.enabled]


def load_evaluators(path: str | Path) -> list[Evaluator]:
    """Every evaluator of the file (disabled ones too), checked; EvaluatorsError on any mistake."""
    return load_evaluators_file(path).evaluators


def load_evaluators_file(path: str | Path) -> EvaluatorsFile:
    """The file's evaluators (disabled ones too) and options, checked; EvaluatorsError on any mistake."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluatorsError(f"The evaluators file {path} does not exist.", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluatorsError(f"The evaluators file {path} cannot be read: {exc}.", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise EvaluatorsError(f"The evaluators file {path} is not valid TOML: {exc}.", path=path) from None
    extra = [k for k in data if k not in FILE_KEYS]
    if extra:
        raise EvaluatorsError(
            f"In {path}: unknown top-level key {extra[0]!r}; each evaluator is an [[evaluator]] table "
            "(the other top-level keys are demo_judge = true or false, and the [review] table).",
            path=path,
        )
    demo_judge = data.get("demo_judge", False)
    if not isinstance(demo_judge, bool):
        raise EvaluatorsError(f"In {path}: demo_judge must be true or false, not {demo_judge!r}.", path=path)
    tables = data.get("evaluator", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise EvaluatorsError(
            f"In {path}: evaluators must be [[evaluator]] tables (double brackets), one per evaluator.",
            path=path,
        )
    evaluators: list[Evaluator] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        name = table.get("name")
        label = f'"{name}"' if isinstance(name, str) and name else f"#{number} (no name)"
        for key in table:
            if key not in KEYS:
                raise _fail(path, label, key, f"unknown key {key!r}; the keys are {_quoted(KEYS)}")
        for key in ("name", "kind"):
            if key not in table:
                raise _fail(path, label, key, f"{key} is missing")
        if table.get("target", "turn") == "turn":
            for key in CONVERSATION_ONLY:
                if key in table:
                    raise _fail(path, label, key, f'{key} is for target = "conversation" evaluators only')
        evaluator = Evaluator(**table, source=path)
        if evaluator.name in seen:
            raise _fail(path, label, "name", "another evaluator of this file has the same name")
        seen.add(evaluator.name)
        evaluators.append(evaluator)
    review = _review(data["review"], evaluators, path) if "review" in data else ReviewConfig()
    return EvaluatorsFile(evaluators, demo_judge, review)
