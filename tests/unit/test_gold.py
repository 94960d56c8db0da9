"""Gold labels that give the expected output: what counts as the same answer."""

from __future__ import annotations

import pytest

from tierflow.routing.gold import matches_expected, same_answer


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ("She pays 3 x 6 = 18 dollars.\n#### 18", 18),
        ("The answer is $18.00.", "18"),
        ("18", 18.0),
        ("Total: 1,250", 1250),
        ("Refund approved", "refund approved."),
        ("Some working.\nFinal answer: Paris", "paris"),
    ],
)
def test_answers_that_say_the_expected_thing(found: str, expected: object) -> None:
    assert same_answer(found, expected)


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ("#### 17", 18),
        ("It is 18 or 19, and finally 19", 18),
        ("no number at all", 18),
        ("Paris, or maybe Lyon", "paris"),
        (None, "18"),
    ],
)
def test_answers_that_do_not(found: str | None, expected: object) -> None:
    assert not same_answer(found, expected)


def test_a_prompt_or_support_output_is_compared_by_its_answer_text() -> None:
    assert matches_expected({"answer": "#### 42", "confidence": 0.9}, 42)
    assert matches_expected({"reply": "We have refunded you."}, "we have refunded you")
    assert not matches_expected({"confidence": 0.9}, 42)
    assert not matches_expected(None, 42)


def test_an_object_checks_every_key_it_names_in_the_output_or_its_fields() -> None:
    document = {"fields": {"company": "Indah Gift & Home Deco", "date": "2018-10-19", "total": "60.30"}}
    assert matches_expected(document, {"total": 60.3})
    assert matches_expected(document, {"company": "INDAH GIFT & HOME DECO", "date": "2018-10-19"})
    assert not matches_expected(document, {"total": "60.30", "date": "2018-10-20"})
    assert not matches_expected(document, {"address": "anywhere"})
    assert not matches_expected(document, {})
    assert matches_expected({"answer": "42", "tier": "small"}, {"answer": "42"})
