"""GSM8K scoring: is the agent's answer the number after `####`?

Numbers are compared as numbers (Decimal), after the normalising GSM8K graders do: thousands
commas, currency signs, percent signs, units and trailing zeros ("18.0", "$18", "18 dollars",
"1,000") all read as the number. Three figures per answer:
- strict: the answer's final number (the whole answer is that number, give or take its unit and
  a trailing full stop, or the number after a last "=" or "is") equals the expected one;
- flexible: the last number written anywhere in the answer equals it;
- no number: the answer holds no number at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_NUMBER_ONLY = re.compile(
    r"^\s*(?:the answer is|answer:)?\s*[$€£]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*%?\s*"
    r"(?:[a-zA-Z][a-zA-Z /]*)?\s*[.!]?\s*$",
    re.IGNORECASE,
)
_TAIL = re.compile(
    r"(?:=|\bis\b|\bare\b|:)\s*[$€£]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*%?\s*(?:[a-zA-Z][a-zA-Z /]*)?\s*[.!]?\s*$"
)


def to_number(text: str) -> Decimal | None:
    """A number written in text ("1,234", "$18", "18.0"), or None."""
    cleaned = text.strip().replace(",", "").lstrip("$€£").rstrip("%").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def expected_number(answer: str) -> Decimal | None:
    """The reference number: what follows the last `####` of a GSM8K answer."""
    if "####" not in answer:
        return to_number(answer)
    return to_number(answer.rsplit("####", 1)[1])


def numbers_in(text: str) -> list[Decimal]:
    found = []
    for match in re.finditer(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", text):
        value = to_number(match.group(0).replace("$", ""))
        if value is not None:
            found.append(value)
    return found


def final_number(text: str) -> Decimal | None:
    """The answer's final number: the whole answer, or what a closing "= N" / "is N" says."""
    match = _NUMBER_ONLY.match(text) or _TAIL.search(text)
    return to_number(match.group(1)) if match else None


@dataclass(frozen=True)
class Grade:
    strict: bool
    flexible: bool
    has_number: bool
    answer_number: str | None


def grade(answer: str | None, expected: str) -> Grade:
    """Grade one answer against a GSM8K reference (the full solution or just the number)."""
    target = expected_number(expected)
    text = answer or ""
    numbers = numbers_in(text)
    final = final_number(text)
    last = numbers[-1] if numbers else None
    return Grade(
        strict=target is not None and final is not None and final == target,
        flexible=target is not None and last is not None and last == target,
        has_number=bool(numbers),
        answer_number=None if final is None else format(final.normalize(), "f"),
    )
