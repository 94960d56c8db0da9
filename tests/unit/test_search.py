"""The strategy search: its plan, its order, its bounds (steps, budget, deadline) and clarify."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import Decision, Strategy, decide
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.policy import Policy
from tierflow.routing.search import SearchState, ending_verdict, first_decision, learned, next_decision
from tierflow.routing.search_plan import SEARCH_STRATEGIES, SearchPlan, plan_for
from tierflow.routing.states import TERMINAL_STATES, JobState, Tier, check_transition
from tierflow.routing.verdict import Verdict, VerdictAction, judge

KINDS = builtin_registry()
SUPPORT = KINDS.get("support")
PROMPT = KINDS.get("prompt")
PRICES = {"fake:fake-small": (0.1, 0.4), "fake:fake-medium": (1.0, 4.0), "fake:fake-large": (5.0, 20.0)}
EASY_PROMPT = Analysis("prompt", "prompt", 0.1, 0.0, False, 0.8, "rules")
REFUND = Analysis("refund", "support", 0.1, 0.0, True, 0.8, "rules")


def _policy(search: dict[str, object], **fields: object) -> Policy:
    return Policy.model_validate({"search": search, **fields})


def _uncertain(quality: float = 0.4) -> Verdict:
    return Verdict(VerdictAction.ESCALATE, quality, {"answer": "draft"}, ("quality low",), Tier.MEDIUM, True)


def _state(decision: Decision) -> SearchState:
    assert decision.search is not None
    return SearchState.from_dict(decision.search)


def _after(decision: Decision, policy: Policy, tier: Tier, ctx: DecisionContext | None = None) -> Decision:
    """The search's next decision after `decision`'s step was judged uncertain on `tier`."""
    kind, analysis = (
        (SUPPORT, REFUND) if _state(decision).key.startswith(SUPPORT.name) else (PROMPT, EASY_PROMPT)
    )
    return next_decision(
        kind, analysis, policy, ctx or DecisionContext(), _state(decision), _uncertain(), tier
    )


def test_every_search_strategy_is_a_decision_strategy() -> None:
    assert set(SEARCH_STRATEGIES) <= {strategy.value for strategy in Strategy}


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"prompt": {"order": ["direct", "guess"]}}, "unknown strategy 'guess'"),
        ({"prompt": {"order": ["direct", "verify@huge"]}}, "unknown tier 'huge'"),
        ({"prompt": {"order": ["clarify", "direct"]}}, "clarify ends the job"),
        ({"prompt": {"order": ["direct", "direct"]}}, "steps named twice: direct"),
        ({"prompt": {"order": ["review@large"]}}, "takes no tier"),
        ({"prompt": {"order": []}}, "at least 1 item"),
        ({"prompt": {"order": ["direct"], "max_steps": 0}}, "greater than or equal to 1"),
        ({"Prompt kind": {"order": ["direct"]}}, "not 'kind' or 'kind/intent'"),
    ],
)
def test_a_bad_plan_is_a_clear_error_naming_its_field(search: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _policy(search)
    assert message in str(caught.value)
    assert "search" in str(caught.value)


def test_a_step_on_a_tier_the_ladder_lacks_is_refused() -> None:
    tiers = {"small": ["fake:fake-small"], "large": ["fake:fake-large"]}
    plan = {"prompt": {"order": ["direct", "verify@medium"]}}
    with pytest.raises(
        ValidationError, match="search.prompt.order names tiers not on the ladder: verify@medium"
    ):
        _policy(plan, ladder=["small", "large"], tier_models=tiers)


def test_without_a_plan_the_decision_is_todays() -> None:
    policy = Policy()
    for kind, analysis in ((PROMPT, EASY_PROMPT), (SUPPORT, REFUND)):
        assert first_decision(kind, analysis, policy, DecisionContext()) == decide(kind, analysis, policy)
    assert "search" not in decide(PROMPT, EASY_PROMPT, policy).as_dict()


def test_the_intents_plan_wins_over_the_kinds() -> None:
    policy = _policy({"support": {"order": ["direct"]}, "support/refund": {"order": ["retrieval", "review"]}})
    assert plan_for(policy.search, "support", "refund") == ("support/refund", policy.search["support/refund"])
    assert plan_for(policy.search, "support", "shipping") == ("support", policy.search["support"])
    assert plan_for(policy.search, "prompt", "prompt") is None
    refund = first_decision(SUPPORT, REFUND, policy, DecisionContext())
    shipping = first_decision(SUPPORT, replace(REFUND, intent="shipping"), policy, DecisionContext())
    assert (refund.strategy, shipping.strategy) == (Strategy.RETRIEVAL, Strategy.DIRECT)


def test_direct_answers_without_the_knowledge_base_and_retrieval_with_it() -> None:
    policy = _policy({"support": {"order": ["direct", "retrieval"]}})
    direct = first_decision(SUPPORT, REFUND, policy, DecisionContext())
    assert direct.strategy is Strategy.DIRECT and "retriever" not in direct.experts
    assert direct.search is not None and direct.search["retrieval"] is False
    assert direct.search["steps"] == 1 and direct.search["step"] == "direct"
    retrieval = _after(direct, policy, Tier.SMALL)
    assert retrieval.strategy is Strategy.RETRIEVAL and "retriever" in retrieval.experts
    assert retrieval.search is not None and retrieval.search["retrieval"] is True
    assert retrieval.tier is Tier.SMALL, "a step that names no tier stays on the tier before it"
    assert retrieval.reasons[0] == "direct on small judged uncertain (quality 0.40)"


def test_the_search_skips_what_the_kind_cannot_do_and_moves_to_the_tier_a_step_names() -> None:
    policy = _policy({"prompt": {"order": ["direct", "retrieval", "verify@medium", "review"]}})
    direct = first_decision(PROMPT, EASY_PROMPT, policy, DecisionContext())
    assert (direct.strategy, direct.tier, direct.experts) == (Strategy.DIRECT, Tier.SMALL, ("answerer",))
    verify = _after(direct, policy, Tier.SMALL)
    assert (verify.strategy, verify.tier) == (Strategy.VERIFY, Tier.MEDIUM)
    assert verify.experts == ("answerer", "verifier")
    assert "skipped retrieval: prompt jobs read no knowledge base" in verify.reasons
    assert verify.search is not None and (verify.search["position"], verify.search["steps"]) == (2, 2)
    held = _after(verify, policy, Tier.MEDIUM)
    assert held.strategy is Strategy.REVIEW and held.models == ()


def test_max_steps_ends_the_search_with_its_clarify_step() -> None:
    policy = _policy({"support": {"order": ["direct", "retrieval", "clarify"], "max_steps": 1}})
    direct = first_decision(SUPPORT, REFUND, policy, DecisionContext())
    asked = _after(direct, policy, Tier.SMALL)
    assert asked.strategy is Strategy.CLARIFY and asked.experts == ()
    assert "search stopped: 1 model steps taken, the plan's max_steps" in asked.reasons


@pytest.mark.parametrize(
    ("ctx", "why"),
    [
        (DecisionContext(budget_left_usd=0.0, prices=PRICES), "the job's budget is spent"),
        (DecisionContext(seconds_left=1.0), "the deadline is 1s away and a step on small takes about 2s"),
        (DecisionContext(seconds_left=-5.0), "the deadline is 0s away"),
    ],
)
def test_budget_and_deadline_stop_the_search_before_a_step_starts(ctx: DecisionContext, why: str) -> None:
    policy = _policy({"prompt": {"order": ["direct", "verify"]}})
    direct = first_decision(PROMPT, EASY_PROMPT, policy, DecisionContext())
    stopped = _after(direct, policy, Tier.SMALL, ctx)
    assert stopped.strategy is Strategy.REVIEW, "an order without clarify or review ends with review"
    assert any(reason.startswith(f"search stopped: {why}") for reason in stopped.reasons)


def test_a_step_the_budget_left_cannot_afford_is_skipped() -> None:
    policy = _policy({"prompt": {"order": ["direct", "verify@large", "clarify"]}})
    direct = first_decision(PROMPT, EASY_PROMPT, policy, DecisionContext())
    poor = DecisionContext(job_tokens=1000, budget_left_usd=0.000_5, prices=PRICES)
    asked = _after(direct, policy, Tier.SMALL, poor)
    assert asked.strategy is Strategy.CLARIFY
    skipped = next(reason for reason in asked.reasons if reason.startswith("skipped verify@large"))
    assert "over the $0.000500 left" in skipped


def test_failed_experts_retry_the_same_step_one_tier_up() -> None:
    policy = _policy({"prompt": {"order": ["direct", "verify"]}})
    direct = first_decision(PROMPT, EASY_PROMPT, policy, DecisionContext())
    failed = Verdict(VerdictAction.ESCALATE, 0.0, None, ("experts failed at small: answerer",), Tier.MEDIUM)
    again = next_decision(PROMPT, EASY_PROMPT, policy, DecisionContext(), _state(direct), failed, Tier.SMALL)
    assert (again.strategy, again.tier) == (Strategy.DIRECT, Tier.MEDIUM)
    assert again.search is not None and (again.search["position"], again.search["steps"]) == (0, 2)


def test_clarify_as_the_first_strategy_ends_the_job_with_the_question() -> None:
    question = "Which order is this about ({intent})?"
    policy = _policy({"support/general": {"order": ["clarify"], "question": question}})
    vague = replace(REFUND, intent="general")
    asked = first_decision(SUPPORT, vague, policy, DecisionContext())
    assert asked.strategy is Strategy.CLARIFY and asked.models == () and asked.experts == ()
    verdict = ending_verdict(asked)
    assert verdict.action is VerdictAction.NEEDS_CLARIFICATION
    assert verdict.output == {"question": "Which order is this about (general)?"}
    assert first_decision(SUPPORT, REFUND, policy, DecisionContext()).strategy is not Strategy.CLARIFY


def test_a_high_risk_job_is_held_for_review_even_with_a_plan() -> None:
    policy = _policy({"support": {"order": ["direct", "clarify"]}}, review_high_risk=True)
    held = first_decision(SUPPORT, replace(REFUND, risk=0.9), policy, DecisionContext())
    assert held.strategy is Strategy.REVIEW and held.search is None


def test_the_search_keeps_what_it_learned_and_the_best_draft() -> None:
    plan = SearchPlan(order=("direct", "retrieval", "review"))
    state = SearchState("support", plan, 0, 1)
    article = {"title": "Refunds", "snippet": "within 30 days"}
    first = learned(state, _uncertain(0.5), [article])
    worse = replace(_uncertain(0.3), output={"answer": "worse"})
    second = learned(replace(first, position=1), worse, [article])
    assert second.carried["articles"] == [article], "an article found twice is kept once"
    assert (second.carried["draft"], second.carried["draft_quality"]) == ({"answer": "draft"}, 0.5)
    review = Decision(Tier.SMALL, Strategy.REVIEW, (), (), 1, None, ("held",), search=second.as_dict())
    held = ending_verdict(review)
    assert (held.action, held.output, held.quality) == (VerdictAction.NEEDS_REVIEW, {"answer": "draft"}, 0.5)


def test_the_judge_says_uncertain_for_quality_not_for_failures() -> None:
    low = [ExpertOutcome("answerer", True, {"answer": "x"}, 0.3)]
    at_top = judge(PROMPT, low, Tier.LARGE, Policy())
    assert at_top.action is VerdictAction.NEEDS_REVIEW and at_top.uncertain
    assert judge(PROMPT, low, Tier.SMALL, Policy()).uncertain
    failed = [ExpertOutcome("answerer", True, None, None, "boom")]
    assert not judge(PROMPT, failed, Tier.SMALL, Policy()).uncertain
    good = [ExpertOutcome("answerer", True, {"answer": "x"}, 0.95)]
    assert not judge(PROMPT, good, Tier.SMALL, Policy()).uncertain


def test_needs_clarification_is_terminal_and_reached_from_a_live_job() -> None:
    assert JobState.NEEDS_CLARIFICATION in TERMINAL_STATES and JobState.NEEDS_CLARIFICATION.terminal
    for source in (JobState.CLASSIFIED, JobState.RUNNING, JobState.ESCALATED):
        check_transition(source, JobState.NEEDS_CLARIFICATION)
    assert len(JobState.NEEDS_CLARIFICATION.value) <= 32, "the state and verdict columns take 32 characters"


def test_a_search_steps_experts_get_its_retrieval_and_what_it_carried() -> None:
    from tierflow.tasks.search import search_context

    policy = _policy({"support": {"order": ["direct", "retrieval"]}})
    direct = first_decision(SUPPORT, REFUND, policy, DecisionContext())
    article = {"title": "Refunds", "snippet": "within 30 days"}
    state = learned(_state(direct), _uncertain(0.5), [article])
    retrieval = next_decision(SUPPORT, REFUND, policy, DecisionContext(), state, _uncertain(0.5), Tier.SMALL)
    assert search_context(direct.as_dict()) == {"search": {"retrieval": False, "articles": [], "draft": None}}
    given = search_context(retrieval.as_dict())["search"]
    assert given == {"retrieval": True, "articles": [article], "draft": {"answer": "draft"}}
    assert search_context(decide(SUPPORT, REFUND, Policy()).as_dict()) == {}


def test_explain_shows_each_step_with_its_cost_and_what_it_carried() -> None:
    from tierflow.worker.cli_explain import search_line

    plan = SearchPlan(order=("direct", "verify"), max_steps=2)
    state = SearchState("prompt", plan, 1, 2, {"draft": {"answer": "x"}, "draft_quality": 0.5})
    experts = [{"cost_usd": 0.0001}, {"cost_usd": 0.0002}]
    line = search_line(state.as_dict(), experts)
    assert (
        line
        == "search prompt: step verify of direct -> verify, model steps 2/2, cost $0.000300, carried draft"
    )
