"""Online evaluation: recorded prompts streamed through the workers' decide, judge and reflect.

Owns `StreamedPrompt` (a prompt's features and both tiers' recorded outcomes
and costs), `OnlineRun` (what a stream cost and how often it was right) and
`stream_prompts`: the policy is first fitted on the training rows (both tiers'
outcomes known), then each prompt in order is decided by `routing.decision.decide`
with that policy's learned scorers, answered by the tier it chose, judged by
`routing.verdict.judge` (where the cascade may escalate a small answer), and only
the outcomes of the tiers actually called are revealed to the learner, which
`routing.reflect.reflect` updates every `reflect_every` prompts, rollbacks
included. A prompt's job id is its position in the stream, so exploration
(`learning.explore_share`) picks the same prompts on every run. The dataset has
two tiers: small and large.

Pure: numpy and pydantic only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.registry import recorded_prompt_kind
from tierflow.routing.learning import LearningSettings, cascade_gain
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import OutcomeRow, calibrate_kind, reflect
from tierflow.routing.scorers import Vector
from tierflow.routing.states import Tier
from tierflow.routing.verdict import VerdictAction, judge

LADDER = (Tier.SMALL, Tier.LARGE)
NEUTRAL = Analysis("general", "general", 0.0, 0.0, False, 1.0, "recorded")


@dataclass(frozen=True)
class StreamedPrompt:
    """One recorded prompt: its features, the small answer's features, and both tiers' outcomes."""

    features: Vector
    answer: Vector | None
    small_correct: bool
    large_correct: bool
    small_cost: float
    large_cost: float


@dataclass(frozen=True)
class OnlineRun:
    prompts: int
    large_calls: int
    correct: int
    cost_usd: float
    versions: int  # policy versions published during the stream (the first fit excluded)
    rollbacks: int
    revealed: int  # outcomes the learner saw: one per tier called, never a tier not called

    @property
    def large_share(self) -> float:
        return self.large_calls / self.prompts if self.prompts else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.prompts if self.prompts else 0.0


def recorded_policy(learning: LearningSettings) -> Policy:
    """A two-tier policy for recorded outcomes: one answerer per prompt, no other rule in the way."""
    return Policy(
        ladder=LADDER,
        tier_models={Tier.SMALL: ("recorded:small",), Tier.LARGE: ("recorded:large",)},
        learning=learning,
    )


def training_rows(prompts: list[StreamedPrompt]) -> list[OutcomeRow]:
    """Both tiers' outcomes of every training prompt, as if each had been asked (no policy decided them)."""
    rows = []
    for index, prompt in enumerate(prompts):
        job = f"train-{index}"
        small_action = "accept" if prompt.small_correct else "escalate"
        rows.append(
            OutcomeRow(
                job,
                recorded_prompt_kind().name,
                Tier.SMALL,
                1,
                prompt.small_correct,
                prompt.features,
                prompt.answer,
                small_action,
                prompt.small_cost,
            )
        )
        rows.append(
            OutcomeRow(
                job,
                recorded_prompt_kind().name,
                Tier.LARGE,
                2,
                prompt.large_correct,
                prompt.features,
                None,
                "accept" if prompt.large_correct else "fail",
                prompt.large_cost,
            )
        )
    return rows


def first_fit(train: list[StreamedPrompt], learning: LearningSettings, encoder: str | None) -> Policy:
    """The policy fitted on the training prompts, without the step bound (there is no traffic yet)."""
    unbounded = learning.model_copy(update={"max_share_step": 1.0})
    fitted = reflect(recorded_policy(unbounded), None, training_rows(train), encoder).policy
    if fitted is None:
        raise ValueError("too few training prompts to fit the learned scorers")
    return fitted.model_copy(update={"version": 2, "learning": learning})


def retarget(fitted: Policy, train: list[StreamedPrompt], learning: LearningSettings) -> Policy:
    """`fitted`'s scorers with thresholds calibrated on `train` for another target (no refit)."""
    rows = training_rows(train)
    unbounded = learning.model_copy(update={"max_share_step": 1.0})
    learned = {
        kind: calibrate_kind(kind, [row for row in rows if row.kind == kind], routing, unbounded, None)[0]
        for kind, routing in fitted.learned.items()
    }
    return fitted.model_copy(update={"learned": learned, "learning": learning})


def stream_prompts(
    train: list[StreamedPrompt],
    stream: list[StreamedPrompt],
    learning: LearningSettings,
    reflect_every: int,
    encoder: str | None = None,
    fitted: Policy | None = None,
) -> OnlineRun:
    """Fit on `train` (or retarget `fitted`, already fitted on it), then route `stream` in order,
    reflecting every `reflect_every` prompts. With no `train` and a `fitted` policy without
    learned routing, the stream starts from the rules alone."""
    policy = first_fit(train, learning, encoder) if fitted is None else retarget(fitted, train, learning)
    versions: dict[int, Policy] = {policy.version: policy}
    parents: dict[int, int | None] = {policy.version: None}
    rows = training_rows(train)
    large_calls = correct = published = rollbacks = 0
    cost = 0.0
    for index, prompt in enumerate(stream):
        called, good = _route(policy, prompt, f"stream-{index}", rows)
        large_calls += Tier.LARGE in called
        correct += good
        cost += sum(prompt.small_cost if tier is Tier.SMALL else prompt.large_cost for tier in called)
        if reflect_every and (index + 1) % reflect_every == 0:
            reflection = reflect(policy, parents[policy.version], rows, encoder)
            chosen = versions.get(reflection.rollback_to or -1) or reflection.policy
            if chosen is None:
                continue
            rollbacks += reflection.rollback_to is not None
            published += 1
            new = chosen.model_copy(update={"version": max(versions) + 1})
            versions[new.version], parents[new.version] = new, policy.version
            policy = new
    revealed = len(rows) - 2 * len(train)
    return OnlineRun(len(stream), large_calls, correct, cost, published, rollbacks, revealed)


def _route(
    policy: Policy, prompt: StreamedPrompt, job: str, rows: list[OutcomeRow]
) -> tuple[list[Tier], bool]:
    """Decide, answer, judge (escalating once at most); record what was revealed. The tiers called."""
    ctx = DecisionContext(job_id=job, prompt_features=prompt.features)
    kind = recorded_prompt_kind()
    tier = decide(kind, NEUTRAL, policy, ctx).tier
    called, attempt = [tier], 1
    while True:
        good = prompt.small_correct if tier is Tier.SMALL else prompt.large_correct
        gain = None
        learned = policy.learned.get(kind.name)
        if tier is Tier.SMALL and learned is not None and prompt.answer is not None:
            gain = cascade_gain(learned, prompt.features, prompt.answer, Tier.LARGE)
        answer = ExpertOutcome(
            kind.default_experts()[0], True, {kind.answer_field or "answer": "recorded"}, None
        )
        verdict = judge(kind, [answer], tier, policy, gain)
        rows.append(
            OutcomeRow(
                job,
                kind.name,
                tier,
                attempt,
                good,
                prompt.features,
                prompt.answer if tier is Tier.SMALL else None,
                verdict.action.value,
                prompt.small_cost if tier is Tier.SMALL else prompt.large_cost,
                None,
                policy.version,
            )
        )
        if verdict.action is not VerdictAction.ESCALATE or verdict.next_tier is None:
            return called, good
        tier, attempt = verdict.next_tier, attempt + 1
        called.append(tier)
