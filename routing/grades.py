"""Graded outcomes: every quality signal on [0, 1], with where it came from, and which one wins.

Owns `Grade` (a value in [0, 1] and its `GradeSource`), the maps from each signal to
[0, 1] (a person's right or wrong: 1 or 0; a person's rating 1 to 5: (r - 1) / 4; a
judge's score 1 to 10: (s - 1) / 9; the verdict: 1 when accepted, else 0), the
precedence among them (`outcome_grade`: a person's label, then a person's rating,
then the sampled judge, then the verdict), and what the learner fits
(`learning_target`: the expected quality, or whether it reaches a kind's quality bar).
Pure: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tierflow.routing.judging import unit_score

RATING_LOW, RATING_HIGH = 1, 5
DEFAULT_BAR = 0.5  # a graded outcome counts as good (for success rates) at or above this


class GradeSource(str, Enum):
    PERSON = "person"  # tierflow feedback --correct/--incorrect, review, gold labels
    RATING = "rating"  # tierflow feedback --rating
    JUDGE = "judge"  # the sampled judge (routing/judging.py)
    VERDICT = "verdict"  # the aggregate's accept (1) or anything else (0)


@dataclass(frozen=True)
class Grade:
    value: float  # in [0, 1]
    source: GradeSource

    def good(self, bar: float | None = None) -> bool:
        return self.value >= (DEFAULT_BAR if bar is None else bar)


def rating_unit(rating: float) -> float:
    """A rating from 1 to 5 on [0, 1]."""
    return (rating - RATING_LOW) / (RATING_HIGH - RATING_LOW)


def judge_unit(score: float) -> float:
    """A judge's score from 1 to 10 on [0, 1]."""
    return unit_score(score)


def outcome_grade(label: bool | None, rating: float | None, judge: float | None, accepted: bool) -> Grade:
    """The signal the learner trusts most for one attempt.

    Args:
        label: a person's right or wrong, if any.
        rating: a person's rating already on [0, 1], if any.
        judge: the judge's score already on [0, 1], if any.
        accepted: whether the verdict accepted the answer.
    """
    if label is not None:
        return Grade(1.0 if label else 0.0, GradeSource.PERSON)
    if rating is not None:
        return Grade(_unit(rating), GradeSource.RATING)
    if judge is not None:
        return Grade(_unit(judge), GradeSource.JUDGE)
    return Grade(1.0 if accepted else 0.0, GradeSource.VERDICT)


def learning_target(grade: Grade, bar: float | None) -> float:
    """What a scorer fits for this outcome: the grade itself (expected quality), or with a
    quality bar for the kind, 1 when the grade reaches it and 0 otherwise (P(reaching the bar))."""
    if bar is None:
        return grade.value
    return 1.0 if grade.value >= bar else 0.0


def _unit(value: float) -> float:
    return min(1.0, max(0.0, float(value)))
