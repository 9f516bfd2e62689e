"""GSM8K scoring: numbers compared as numbers after the usual normalising; the shipped split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.gsm8k import expected_number, grade

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "answer, strict, flexible, has_number",
    [
        ("1000", True, True, True),
        ("1,000", True, True, True),
        ("$1,000.00", True, True, True),
        ("1000 dollars", True, True, True),
        ("The answer is 1000.", True, True, True),
        ("x = 10 * 100 = 1000", True, True, True),
        ("She makes $1,000 every day.", False, True, True),  # a sentence: only the last number
        ("I think 1000 or 999", False, False, True),
        ("1000.5", False, False, True),
        ("-1000", False, False, True),
        ("no idea", False, False, False),
        ("", False, False, False),
        (None, False, False, False),
    ],
)
def test_answers_are_graded_as_numbers(answer, strict, flexible, has_number):
    g = grade(answer, "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 ... #### 1,000")
    assert (g.strict, g.flexible, g.has_number) == (strict, flexible, has_number)


def test_answer_number_is_shown_plainly():
    assert grade("18.0", "#### 18").answer_number == "18"
    assert grade("$70,000", "#### 70000").answer_number == "70000"


def test_the_shipped_split_is_gsm8k_test_with_its_licence():
    data = ROOT / "evals" / "data" / "gsm8k"
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319 and "MIT License" in (data / "LICENSE").read_text()
    assert all(expected_number(r["answer"]) is not None for r in rows)
    assert expected_number(rows[0]["answer"]) == 18
