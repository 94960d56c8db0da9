"""Graded outcomes in the learner: every signal on [0, 1], a person's label first, graded fits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tierflow.routing.grades import (
    Grade,
    GradeSource,
    judge_unit,
    learning_target,
    outcome_grade,
    rating_unit,
)
from tierflow.routing.learning import LearningSettings
from tierflow.routing.reflect import OutcomeRow, tier_scorers
from tierflow.routing.states import Tier


def test_each_signal_maps_onto_zero_to_one():
    assert [rating_unit(r) for r in (1, 3, 5)] == [0.0, 0.5, 1.0]
    assert [judge_unit(s) for s in (1, 10)] == [0.0, 1.0]
    assert judge_unit(7) == pytest.approx(6 / 9)


def test_a_persons_label_outranks_a_rating_the_judge_and_the_verdict():
    assert outcome_grade(False, 1.0, 1.0, True) == Grade(0.0, GradeSource.PERSON)
    assert outcome_grade(None, 0.25, 1.0, True) == Grade(0.25, GradeSource.RATING)
    assert outcome_grade(None, None, 2 / 9, True) == Grade(2 / 9, GradeSource.JUDGE)
    assert outcome_grade(None, None, None, True) == Grade(1.0, GradeSource.VERDICT)
    assert outcome_grade(None, None, None, False) == Grade(0.0, GradeSource.VERDICT)


def test_a_quality_bar_turns_the_grade_into_reaching_it():
    grade = Grade(0.6, GradeSource.JUDGE)
    assert learning_target(grade, None) == 0.6
    assert (learning_target(grade, 0.5), learning_target(grade, 0.7)) == (1.0, 0.0)
    assert grade.good() and not grade.good(0.7)


def _row(index: int, feature: float, quality: float) -> OutcomeRow:
    good = quality >= 0.5
    features = np.array([feature])
    return OutcomeRow(f"j{index}", "prompt", Tier.SMALL, 1, good, features, None, "accept", quality=quality)


def test_scorers_fit_the_expected_graded_quality():
    # quality rises with the feature; the verdict alone (all good) would teach nothing
    rows = [_row(i, x, 0.2 + 0.6 * x) for i, x in enumerate(np.linspace(0, 1, 200))]
    assert all(row.good for row in rows[100:]) and not rows[0].good
    scorer = tier_scorers(rows, (Tier.SMALL,), LearningSettings(min_samples=50))[Tier.SMALL]
    low, high = scorer.probability(np.array([[0.0], [1.0]]))
    assert low == pytest.approx(0.2, abs=0.05) and high == pytest.approx(0.8, abs=0.05)


def test_rows_of_one_quality_give_a_constant_scorer():
    rows = [_row(i, float(i), 0.75) for i in range(60)]
    scorer = tier_scorers(rows, (Tier.SMALL,), LearningSettings(min_samples=50))[Tier.SMALL]
    assert scorer.weights == (0.0,)
    assert float(scorer.probability(np.array([3.0]))[0]) == pytest.approx((45 + 1) / 62)


def test_a_reflect_run_records_where_its_graded_outcomes_came_from():
    from tierflow.routing.policy import Policy
    from tierflow.routing.reflect import reflect

    rows = [_row(i, float(i % 7), 0.9) for i in range(10)]
    rows = [*rows, OutcomeRow("v", "prompt", Tier.SMALL, 1, True, np.array([1.0]), None, "accept")]
    rows = [row if row.job_id == "v" else dataclasses.replace(row, source="judge") for row in rows]
    assert reflect(Policy(), None, rows, None).statistics["grades"] == {"judge": 10, "verdict": 1}
    plain = [dataclasses.replace(row, source="verdict", quality=None) for row in rows]
    assert "grades" not in reflect(Policy(), None, plain, None).statistics
