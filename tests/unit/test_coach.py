"""The routing coach's proposals are reviewed: allowed fields, bounds, step, a valid policy."""

from __future__ import annotations

import json

from tierflow.providers.rules import answer
from tierflow.routing.coach import CoachProposal, Failure, coach_prompt, coached, review_proposal
from tierflow.routing.experts import parse_answer
from tierflow.routing.policy import Policy


def _proposal(*changes: tuple[str, float]) -> CoachProposal:
    return CoachProposal(
        summary="s", confidence=0.9, changes=[{"field": f, "value": v, "why": "w"} for f, v in changes]
    )


def test_allowed_changes_within_the_step_are_applied() -> None:
    overrides, record = review_proposal(Policy(), _proposal(("accept_quality", 0.75)))
    assert overrides == {"accept_quality": 0.75}
    assert record[0]["outcome"] == "applied" and record[0]["from"] == 0.7
    assert coached(Policy(), overrides).accept_quality == 0.75


def test_a_large_step_is_cut_to_the_bound_and_says_so() -> None:
    overrides, record = review_proposal(Policy(), _proposal(("small_max_difficulty", 0.05)))
    assert overrides == {"small_max_difficulty": 0.25}
    assert record[0]["outcome"] == "applied, bounded to 0.250 (step 0.1)"


def test_fields_the_coach_may_not_touch_and_values_out_of_bounds_are_refused() -> None:
    overrides, record = review_proposal(
        Policy(), _proposal(("refund_limit_usd", 10_000.0), ("accept_quality", 0.1), ("review_risk", 0.75))
    )
    assert overrides == {"review_risk": 0.75}
    assert [r["outcome"] for r in record] == [
        "refused: not a field the coach may change",
        "refused: outside [0.3, 0.95]",
        "applied",
    ]


def test_changes_that_make_the_policy_invalid_are_all_refused() -> None:
    policy = Policy(small_max_difficulty=0.6, medium_max_difficulty=0.62)
    overrides, record = review_proposal(policy, _proposal(("small_max_difficulty", 0.7)))
    assert overrides == {}
    assert record[0]["outcome"].startswith("refused: the changed policy does not validate")


def test_the_fake_coach_answers_the_prompt_with_a_valid_proposal() -> None:
    failures = [Failure("prompt", "small", "escalate", "However ...") for _ in range(3)]
    prompt = coach_prompt(Policy(), failures, {"prompt": {"small": {"rows": 3}}})
    assert prompt.system.startswith("Task: coach")
    assert json.loads(prompt.user)["policy"]["small_max_difficulty"] == 0.35
    parsed = CoachProposal.model_validate(
        parse_answer(CoachProposal, answer(prompt.system, prompt.user, 0.97)).output | {"confidence": 0.9}
    )
    assert [(c.field, c.value) for c in parsed.changes] == [("small_max_difficulty", 0.3)]
