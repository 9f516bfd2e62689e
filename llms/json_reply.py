"""A constrained JSON reply that always parses, even when it is stopped early.

llama.cpp's grammar makes every *finished* reply valid JSON, but a reply can end before the
grammar does: the loop detector stops a model that repeats itself, or max_tokens runs out.
The caller (smolagents' `json.loads`, the judge) then gets "Unterminated string". Here:

- `JsonPrefix` reads the reply as it streams and knows the last point where it can be closed
  without taking back a character already sent (inside a string value, after a whole value).
- `Rest` is what must follow that point per the schema: a closing quote and braces (written
  by hand), and any required value still missing (written by the model, under a grammar for
  just that rest: the judge's score is the model's, never invented).
- `strict_grammar` is llama-cpp-python's grammar for a schema with JSON's own string rule:
  its converter lets raw newlines and tabs into strings (`char ::= [^"\\\\]`), which
  `json.loads` refuses ("Invalid control character"); the judge lost verdicts to that.

Pure Python; llama_cpp is imported only inside the grammar functions (the model process).
"""

from __future__ import annotations

import bisect
import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

# JSON forbids raw control characters in strings; llama.cpp's own JSON grammar excludes them too.
_STRICT_CHAR = (
    r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)
_STRICT_DOT = r'dot ::= [^"\\\x7F\x00-\x1F]'
_CHAR_RULE = re.compile(r"^char ::= .*$", re.MULTILINE)
_DOT_RULE = re.compile(r"^dot ::= .*$", re.MULTILINE)
_WHITESPACE = " \t\n\r"
_LITERALS = ("true", "false", "null")
_NUMBER_CHARS = set("0123456789+-.eE")


def _strict(grammar: str) -> str:
    grammar = _CHAR_RULE.sub(lambda _m: _STRICT_CHAR, grammar)
    return _DOT_RULE.sub(lambda _m: _STRICT_DOT, grammar)


def _converter() -> Any:
    from llama_cpp.llama_grammar import SchemaConverter

    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def strict_grammar(schema: dict[str, Any]) -> str:
    """GBNF for `schema` whose strings hold no raw control characters."""
    converter = _converter()
    schema = converter.resolve_refs(copy.deepcopy(schema), "stdin")
    converter.visit(schema, "")
    return _strict(converter.format_grammar())


@dataclass
class _Frame:
    kind: str  # "object" or "array"
    schema: dict[str, Any]
    keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rest:
    """What closes a cut reply: `parts` are literal text (str) or schemas of values to write."""

    parts: tuple[str | dict[str, Any], ...]

    @property
    def literal(self) -> str | None:
        """The whole rest when nothing is left for the model to choose; else None."""
        if all(isinstance(p, str) for p in self.parts):
            return "".join(str(p) for p in self.parts)
        return None

    def grammar(self) -> str:
        """GBNF for exactly this rest: the literals, and each missing value per its schema."""
        converter = _converter()
        items = []
        for index, part in enumerate(self.parts):
            if isinstance(part, str):
                if part:
                    items.append(json.dumps(part))
            else:
                items.append(converter.visit(copy.deepcopy(part), f"rest-{index}"))
        return _strict(converter.format_grammar()) + "\nroot ::= " + " ".join(items)

    def filled(self) -> str | None:
        """The rest with each missing value at its emptiest ("" , [], {}), or None when a
        value has no honest empty form (a number, a boolean, an enum: a score is never made up)."""
        out = []
        for part in self.parts:
            value = part if isinstance(part, str) else _empty(part)
            if value is None:
                return None
            out.append(value)
        return "".join(out)


def _empty(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if "enum" in schema or "const" in schema:
        return None
    if kind == "string":
        return '""'  # nothing written: it parses (a pattern or minLength is the model's to keep)
    if kind == "array":
        return "[]"
    if kind == "object":
        required = _required(schema)
        values = []
        for key in required:
            value = _empty((schema.get("properties") or {}).get(key) or {})
            if value is None:
                return None
            values.append(f"{json.dumps(key)}: {value}")
        return "{" + ", ".join(values) + "}"
    if isinstance(kind, list) and "null" in kind:
        return "null"
    return None


def _required(schema: dict[str, Any]) -> list[str]:
    """Required keys in the schema's property order (the order the grammar writes them)."""
    required = [str(k) for k in schema.get("required") or []]
    ordered = [k for k in (schema.get("properties") or {}) if k in required]
    return ordered + [k for k in required if k not in ordered]


class JsonPrefix:
    """Reads a JSON reply character by character (fed as it streams).

    `safe` is the last position where the reply can be cut and closed without taking back a
    character: inside a string value (not mid-escape), right after `{`, `[` or a whole value.
    Keys, numbers and literals are not safe until whole, so a caller that sends only up to
    `safe` never sends half a key it would have to withdraw.
    """

    def __init__(self, schema: dict[str, Any] | None) -> None:
        self.schema = schema or {}
        self.text = ""
        self.safe = 0
        self.safe_points = [0]  # every safe position, in order (a reply is a few KB at most)
        self.broken = False  # not JSON at all (no grammar was used): nothing can be closed
        self._stack: list[_Frame] = []
        self._mode = "value"
        self._in_key = False
        self._escape = 0  # -1: after a backslash; 1..4: hex digits of \\u still to come
        self._buffer = ""
        self._value_schema: dict[str, Any] = self.schema

    @property
    def complete(self) -> bool:
        return self._mode == "done"

    def feed(self, text: str) -> JsonPrefix:
        for char in text:
            if self.broken:
                self.text += char
                continue
            self._char(char)
            self.text += char
            if self._is_safe():
                self.safe = len(self.text)
                self.safe_points.append(self.safe)
        return self

    def safe_before(self, position: int) -> int:
        """The last safe position at or before `position` (any position once it is not JSON)."""
        if self.broken:
            return position
        return self.safe_points[bisect.bisect_right(self.safe_points, position) - 1]

    def _is_safe(self) -> bool:
        if self._mode == "string":
            return not self._in_key and self._escape == 0
        return self._mode in ("after", "done", "key_or_end", "value_or_end")

    def _char(self, char: str) -> None:
        mode = self._mode
        if mode == "string":
            self._string_char(char)
        elif mode == "number":
            if char in _NUMBER_CHARS:
                self._buffer += char
            else:
                self._value_done()
                self._char(char)
        elif mode == "literal":
            self._buffer += char
            if self._buffer in _LITERALS:
                self._value_done()
            elif not any(word.startswith(self._buffer) for word in _LITERALS):
                self.broken = True
        elif char in _WHITESPACE:
            return
        elif mode == "value":
            self._start_value(char)
        elif mode == "value_or_end":
            if char == "]":
                self._close_container()
            else:
                self._mode = "value"
                self._start_value(char)
        elif mode in ("key_or_end", "key_next"):
            if char == '"':
                self._mode, self._in_key, self._buffer = "string", True, ""
            elif char == "}" and mode == "key_or_end":
                self._close_container()
            else:
                self.broken = True
        elif mode == "colon":
            if char != ":":
                self.broken = True
                return
            frame = self._stack[-1]
            key = self._key()
            frame.keys.append(key)
            self._value_schema = (frame.schema.get("properties") or {}).get(key) or {}
            self._mode = "value"
        elif mode == "after":
            self._after_char(char)
        else:  # done: only whitespace may follow
            self.broken = True

    def _key(self) -> str:
        try:
            return str(json.loads('"' + self._buffer + '"'))
        except ValueError:
            return self._buffer

    def _string_char(self, char: str) -> None:
        if self._in_key:
            self._buffer += char
        if self._escape == -1:
            self._escape = 4 if char == "u" else 0
        elif self._escape > 0:
            self._escape -= 1
        elif char == "\\":
            self._escape = -1
        elif char == '"':
            if self._in_key:
                self._buffer = self._buffer[:-1]
                self._in_key = False
                self._mode = "colon"
            else:
                self._value_done()

    def _start_value(self, char: str) -> None:
        schema = self._value_schema
        if char == "{":
            self._stack.append(_Frame("object", schema))
            self._mode = "key_or_end"
        elif char == "[":
            self._stack.append(_Frame("array", schema))
            self._value_schema = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            self._mode = "value_or_end"
        elif char == '"':
            self._mode, self._in_key, self._escape = "string", False, 0
        elif char in "-0123456789":
            self._mode, self._buffer = "number", char
        elif char in "tfn":
            self._mode, self._buffer = "literal", char
        else:
            self.broken = True

    def _after_char(self, char: str) -> None:
        frame = self._stack[-1]
        if char == "," and frame.kind == "object":
            self._mode = "key_next"
        elif char == "," and frame.kind == "array":
            items = frame.schema.get("items")
            self._value_schema = items if isinstance(items, dict) else {}
            self._mode = "value"
        elif (char == "}" and frame.kind == "object") or (char == "]" and frame.kind == "array"):
            self._close_container()
        else:
            self.broken = True

    def _close_container(self) -> None:
        self._stack.pop()
        self._value_done()

    def _value_done(self) -> None:
        self._buffer = ""
        self._mode = "after" if self._stack else "done"

    def rest(self) -> Rest | None:
        """What closes the reply as read so far (read it only up to a safe point), per the
        schema; None when it is already whole or cannot be closed (not JSON)."""
        if self.complete or self.broken:
            return None
        if not self._stack and self._mode == "value":  # nothing written yet
            return Rest((self.schema,)) if self.schema else None
        if not self._is_safe():
            return None
        parts: list[str | dict[str, Any]] = ['"'] if self._mode == "string" else []
        for frame in reversed(self._stack):
            if frame.kind == "array":
                parts.append("]")
                continue
            first = not frame.keys
            for key in _required(frame.schema):
                if key in frame.keys:
                    continue
                parts.append(("" if first else ", ") + json.dumps(key) + ": ")
                parts.append((frame.schema.get("properties") or {}).get(key) or {})
                first = False
            parts.append("}")
        return Rest(tuple(parts))
