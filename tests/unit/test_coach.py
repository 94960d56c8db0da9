"""The routing coach's proposals are reviewed: allowed fields, bounds, step, a valid policy."""

from __future__ import annotations

import json

from tierflow.providers.rules import answer
from tierflow.routing.coach import CoachProposal, Failure, coach_prompt, coached, review_proposal
from tierflow.routing.experts import parse_answer
from tierflow.routing.policy import Policy
from tierflow.routing.search_plan import SearchPlan


def _proposal(*changes: tuple[str, float | list[str]]) -> CoachProposal:
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


def test_the_coach_may_reorder_a_search_plan_with_its_own_steps_only() -> None:
    plan = SearchPlan(order=("direct", "retrieval", "review"), max_steps=3)
    policy = Policy(search={"support/refund": plan, "prompt": SearchPlan(order=("direct", "verify"))})
    prompt = coach_prompt(policy, [], {})
    assert json.loads(prompt.user)["policy"]["search"]["support/refund"] == ["direct", "retrieval", "review"]
    assert '"search.KEY"' in prompt.system
    proposal = _proposal(
        ("search.support/refund", ["retrieval", "direct", "review"]),
        ("search.prompt", ["direct", "verify", "review"]),
        ("search.support/billing", ["direct"]),
        ("accept_quality", ["direct"]),
    )
    overrides, record = review_proposal(policy, proposal)
    outcomes = [entry["outcome"] for entry in record]
    assert outcomes[0] == "applied: direct -> retrieval -> review became retrieval -> direct -> review"
    assert outcomes[1] == "refused: a reorder keeps the plan's steps (direct, verify)"
    assert outcomes[2] == "refused: no search plan 'support/billing'"
    assert outcomes[3] == "refused: not a field the coach may change"
    new = coached(policy, overrides)
    assert new.search["support/refund"].order == ("retrieval", "direct", "review")
    assert new.search["support/refund"].max_steps == 3 and new.search["prompt"] == policy.search["prompt"]
    ending_first = _proposal(("search.support/refund", ["review", "direct", "retrieval"]))
    overrides, record = review_proposal(policy, ending_first)
    assert overrides == {} and "ends the job" in record[0]["outcome"]
