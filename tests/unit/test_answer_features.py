"""routing.answer_features on answers written by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.answer_features import (
    ANSWER_FEATURES,
    answer_feature_matrix,
    answer_features,
    calculator_mismatches,
    checked_equations,
    evaluate_arithmetic,
)

PROMPT = "James runs 3 sprints 3 times a week. He runs 60 meters each sprint. How many meters a week?"
GOOD = "He runs 3 x 60 = <<3*60=180>>180 meters a session.\nSo 180 * 3 = <<180*3=540>>540 meters.\n#### 540\n"
WRONG = "He runs 3 x 60 = 200 meters a session.\nSo 200 * 3 = 600 meters.\n#### 600\n"


def feature(prompt: str, answer: str, name: str) -> float:
    return float(answer_features(prompt, answer)[ANSWER_FEATURES.index(name)])


def test_one_float_per_named_feature() -> None:
    values = answer_features(PROMPT, GOOD)
    assert values.dtype == np.float64
    assert values.shape == (len(ANSWER_FEATURES),)
    assert len(set(ANSWER_FEATURES)) == len(ANSWER_FEATURES)


@pytest.mark.parametrize(
    ("expression", "value"),
    [("3 x 60", 180.0), ("$400 + $60", 460.0), ("1,000 * 2", 2000.0), ("(4 + 2) × 3", 18.0), ("9 ÷ 3", 3.0)],
)
def test_shown_arithmetic_is_evaluated(expression: str, value: float) -> None:
    assert evaluate_arithmetic(expression) == pytest.approx(value)


@pytest.mark.parametrize("expression", ["__import__('os')", "2 ** 100000", "7 / 0", "x + 1", "3 +"])
def test_anything_but_plain_arithmetic_is_not_evaluated(expression: str) -> None:
    assert evaluate_arithmetic(expression) is None


def test_wrong_equations_are_counted_and_right_ones_are_not() -> None:
    assert checked_equations("3 x 60 = 180 and 180 * 3 = 540") == (2, 0, [180.0, 540.0])
    assert checked_equations("3 x 60 = 200 and 2 + 2 = 4")[:2] == (2, 1)
    assert feature(PROMPT, WRONG, "wrong_equations") == 1.0  # 200 * 3 = 600 is right arithmetic
    assert feature(PROMPT, GOOD, "wrong_equations") == 0.0


def test_a_chain_of_equalities_checks_each_step_on_its_own() -> None:
    checked, wrong, _ = checked_equations("22 + 4 x 12 = 22 + 48 = 70")
    assert wrong == 0 and checked >= 1


def test_calculator_notes_are_checked_against_their_arithmetic_and_the_text_after() -> None:
    assert calculator_mismatches("<<3*60=180>>180 and <<180*3=540>>540") == 0
    assert calculator_mismatches("<<3*60=190>>190") == 1  # wrong arithmetic
    assert calculator_mismatches("<<3*60=180>>190") == 1  # text disagrees with the note


def test_a_stated_final_answer_is_seen() -> None:
    assert feature(PROMPT, GOOD, "states_final") == 1.0
    assert feature(PROMPT, "He runs a lot of meters.", "states_final") == 0.0


def test_a_cut_off_answer_is_truncated() -> None:
    assert feature(PROMPT, "He runs 15 + 25 = <<15+2", "truncated") == 1.0
    assert feature(PROMPT, "", "truncated") == 1.0
    assert feature(PROMPT, GOOD, "truncated") == 0.0


def test_hedges_and_refusals_are_counted() -> None:
    assert feature(PROMPT, "Maybe 540, I think, but I'm not sure.", "hedges") > 0
    assert feature(PROMPT, GOOD, "hedges") == 0.0
    assert feature(PROMPT, "There is not enough information to answer.", "refuses") == 1.0


def test_the_final_number_is_described() -> None:
    assert feature(PROMPT, GOOD, "final_is_integer") == 1.0
    assert feature(PROMPT, "#### 12.5", "final_is_integer") == 0.0
    assert feature(PROMPT, "The answer is 60.", "final_in_prompt") == 1.0
    assert feature(PROMPT, GOOD, "final_in_prompt") == 0.0
    assert feature(PROMPT, GOOD, "final_matches_last_result") == 1.0
    assert feature(PROMPT, "3 x 60 = 180.\n#### 7", "final_matches_last_result") == 0.0


def test_the_share_of_prompt_numbers_used_is_measured() -> None:
    assert feature(PROMPT, GOOD, "prompt_numbers_used") == 1.0  # 3 and 60
    assert feature(PROMPT, "It is 60 or so.", "prompt_numbers_used") == pytest.approx(0.5)


def test_repeated_lines_and_option_letters_are_seen() -> None:
    assert feature(PROMPT, "a\na\na\nb", "repeated_lines") == pytest.approx(0.5)
    assert feature(PROMPT, "The answer is (B).", "option_letters") == 1.0


def test_the_matrix_has_one_row_per_answer() -> None:
    matrix = answer_feature_matrix([PROMPT, PROMPT], [GOOD, WRONG])
    assert matrix.shape == (2, len(ANSWER_FEATURES))
    assert np.array_equal(matrix[0], answer_features(PROMPT, GOOD))
