"""Graded outcome files (a score per model instead of right / wrong), read and measured.

The file is built here: five prompts scored 1 to 10 by a made-up judge, one prompt
with two turns. Every figure is computed by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tierflow.providers.outcomes_data import (
    RecordedPrompt,
    ScoreRange,
    TierModels,
    choose_tiers,
    parse_prices,
    parse_score_range,
    prompt_outcomes,
    read_recorded,
)
from tierflow.routing.errors import InputError
from tierflow.routing.metrics import BaselineRouter, PromptOutcomes, baseline_scores, evaluate_scores

# prompt:        0    1    2    3    4
# weak score:    8    4    6    2    9      sum 29, mean 5.8
# strong score:  9    8    6    7    8      sum 38, mean 7.6
# gain:         +1   +4    0   +5   -1      PGR = cumulative gain / 9 (the gap is 1.8 x 5 prompts)
WEAK = [8, 4, 6, 2, 9]
STRONG = [9, 8, 6, 7, 8]
ROUTER = np.array([0.5, 0.9, 0.1, 0.3, 0.7])
# One output token (no response recorded), no input price: weak 1e-6 USD a call, strong 1e-5.
JUDGE_SCALE = ScoreRange(1, 10)
PRICES = parse_prices(["weak-judged=0,1", "strong-judged=0,10"])


def _record(index: int) -> dict[str, object]:
    record: dict[str, object] = {
        "id": f"g{index}",
        "prompt": f"question {index}",
        "outcomes": {"strong-judged": {"score": STRONG[index]}, "weak-judged": {"score": WEAK[index]}},
    }
    if index == 2:
        record["turns"] = ["question 2", "and a follow-up\u2028on a second line"]
    return record


def _write(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _graded(tmp_path: Path) -> Path:
    return _write(tmp_path / "graded.jsonl", [_record(i) for i in range(5)])


def _outcomes(
    tmp_path: Path, score_range: ScoreRange | None = JUDGE_SCALE
) -> tuple[list[RecordedPrompt], TierModels, PromptOutcomes]:
    records = read_recorded(_graded(tmp_path), score_range)
    tiers = choose_tiers(records, records)
    return records, tiers, prompt_outcomes(records, tiers, PRICES)


def test_a_graded_file_is_read_with_its_range_and_turns(tmp_path: Path) -> None:
    records, tiers, outcomes = _outcomes(tmp_path)
    assert (tiers.small, tiers.large) == ("weak-judged", "strong-judged")  # lower mean score is small
    assert [r.score_range for r in records] == [ScoreRange(1, 10)] * 5
    assert records[2].turns == ("question 2", "and a follow-up\u2028on a second line")
    assert records[2].text == "question 2\n\nand a follow-up\u2028on a second line"
    assert records[1].normalised_quality("weak-judged") == pytest.approx(3 / 9)
    assert outcomes.graded and outcomes.floor == 1
    assert outcomes.small_accuracy == pytest.approx(5.8) and outcomes.large_accuracy == pytest.approx(7.6)


def test_pgr_apgr_cpt_and_the_95pct_point_on_mean_scores_match_hand_computed_values(tmp_path: Path) -> None:
    _, _, outcomes = _outcomes(tmp_path)
    quality = evaluate_scores(outcomes, ROUTER)
    # Order 1, 4, 0, 3, 2: cumulative gain 0, 4, 3, 4, 9, 9; mean score 5.8, 6.6, 6.4, 6.6, 7.6, 7.6.
    assert [p.accuracy for p in quality.curve] == pytest.approx([5.8, 6.6, 6.4, 6.6, 7.6, 7.6])
    # Trapezoids of width 1/5 over PGR 0, 4/9, 3/9, 4/9, 1, 1: (2 + 3.5 + 3.5 + 6.5 + 9) / 9 / 5.
    assert quality.apgr == pytest.approx(24.5 / 45)
    # PGR .5 lies (.5 - 4/9) / (5/9) = 0.1 of the way from share .6 to .8; .8 lies 0.64 of it.
    assert quality.cpt50 == pytest.approx(0.62)
    assert quality.cpt80 == pytest.approx(0.728)
    # 95% quality measured from the scale's floor 1: 1 + .95 x 6.6 = 7.27, a score sum of
    # 36.35, 3.35 / 5 = 0.67 of the way from share .6 (sum 33) to .8 (sum 38): 0.734.
    assert quality.quality_at_95pct == pytest.approx(7.27)
    assert quality.large_share_at_95pct_quality == pytest.approx(0.734)
    # Cost there: 5e-6 for the weak calls + 0.734 x 5 x 9e-6 escalated = 3.803e-5, of 5e-5.
    assert quality.cost_ratio_at_95pct_quality == pytest.approx(3.803e-5 / 5e-5)


def test_without_a_given_range_the_scores_own_range_is_the_scale(tmp_path: Path) -> None:
    _, _, outcomes = _outcomes(tmp_path, None)
    quality = evaluate_scores(outcomes, ROUTER)
    # Scores run from 2 to 9: the target is 2 + .95 x 5.6 = 7.32, a sum of 36.6, share .6 + .2 x .72.
    assert outcomes.floor == 2
    assert quality.quality_at_95pct == pytest.approx(7.32)
    assert quality.large_share_at_95pct_quality == pytest.approx(0.744)
    assert quality.apgr == pytest.approx(24.5 / 45)  # PGR does not depend on the scale


def test_the_oracle_and_random_work_on_scores(tmp_path: Path) -> None:
    _, _, outcomes = _outcomes(tmp_path)
    oracle = evaluate_scores(outcomes, baseline_scores(BaselineRouter.ORACLE, outcomes))
    # Order 3 (+5), 1 (+4), 0 (+1), 2 (0), 4 (-1): cumulative 0, 5, 9, 10, 10, 9 over 9.
    # Trapezoids: 2.5 + 7 + 9.5 + 10 + 9.5 = 38.5 -> 38.5 / 45.
    assert oracle.apgr == pytest.approx(38.5 / 45)
    areas = [
        evaluate_scores(outcomes, baseline_scores(BaselineRouter.RANDOM, outcomes, seed)).apgr
        for seed in range(30)
    ]
    assert all(area is not None and area <= 38.5 / 45 + 1e-12 for area in areas)
    assert len(set(areas)) > 1  # the seed changes the ordering


def _refused(tmp_path: Path, records: list[object], score_range: ScoreRange | None = None) -> InputError:
    path = _write(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError) as caught:
        read_recorded(path, score_range)
    assert caught.value.source == str(path)
    return caught.value


def _with(index: int, model: str, outcome: object) -> dict[str, object]:
    record = _record(index)
    record["outcomes"] = {**record["outcomes"], model: outcome}  # type: ignore[dict-item]
    return record


@pytest.mark.parametrize(
    ("bad", "line", "field", "reason"),
    [
        (
            _with(1, "weak-judged", {"correct": True}),
            2,
            "outcomes.weak-judged.correct",
            "records score (line 1)",
        ),
        (
            _with(2, "weak-judged", {"score": 11}),
            3,
            "outcomes.weak-judged.score",
            "outside --score-range 1,10",
        ),
        (_with(1, "weak-judged", {"score": float("nan")}), 2, "outcomes.weak-judged.score", "finite"),
        (_with(1, "weak-judged", {"score": "7"}), 2, "outcomes.weak-judged.score", "must be a number"),
        (_with(1, "weak-judged", {"score": True}), 2, "outcomes.weak-judged.score", "must be a number"),
        (_with(1, "weak-judged", {"score": 3, "correct": True}), 2, "outcomes.weak-judged", "both"),
        ({**_record(3), "prompt": ["question", 3]}, 4, "prompt", "must be a string"),
        ({**_record(3), "turns": ["question 3", 4]}, 4, "turns.1", "must be a string"),
        ({**_record(3), "outcomes": {"strong-judged": {"score": 5}}}, 4, "outcomes.weak-judged", "missing"),
    ],
)
def test_bad_graded_input_is_refused_by_line_and_field(
    tmp_path: Path, bad: dict[str, object], line: int, field: str, reason: str
) -> None:
    records: list[object] = [_record(i) for i in range(5)]
    records[line - 1] = bad
    error = _refused(tmp_path, records, ScoreRange(1, 10))
    assert (error.line, error.field) == (line, field)
    assert reason in error.reason


def test_a_correctness_file_with_a_score_is_refused_at_that_line(tmp_path: Path) -> None:
    right = {"id": "c", "prompt": "p", "outcomes": {"a": {"correct": True}, "b": {"correct": False}}}
    scored = {"id": "d", "prompt": "q", "outcomes": {"a": {"correct": True}, "b": {"score": 4}}}
    error = _refused(tmp_path, [right, right, scored])
    assert (error.line, error.field) == (3, "outcomes.b.score")
    assert "records correct (line 1)" in error.reason


def test_a_file_whose_scores_are_all_equal_needs_a_range(tmp_path: Path) -> None:
    same = {"prompt": "p", "outcomes": {"a": {"score": 5}, "b": {"score": 5}}}
    error = _refused(tmp_path, [same, same])
    assert error.line == 0 and "--score-range" in error.reason
    assert read_recorded(tmp_path / "bad.jsonl", ScoreRange(1, 10))[0].score_range == ScoreRange(1, 10)


@pytest.mark.parametrize("option", ["1", "5,1", "a,b", "1,nan", "1,2,3"])
def test_a_bad_score_range_option_is_refused(option: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_score_range(option)
    assert caught.value.source == "--score-range"
    assert parse_score_range("1,10") == ScoreRange(1, 10)
