"""judge (queue of the policy's top tier): the sampled judge grades one accepted answer.

`send_judging` is called after an accepted result is committed; it sends the task
only for the policy's `judge_share` of jobs (routing.judging.chosen_for_judging), so
a job that is not sampled costs nothing. The task asks the top tier's models with
structured output (schema-validated, retried once), within the day's budget
(`judge_budget_usd`, spend counted in the store), and records the grade as feedback
with source "judge". It never touches the job's result or state; a redelivery
finds the judgement and does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from sqlalchemy import select

from tierflow.providers.base import ModelRef
from tierflow.providers.pricing import price_for, price_table
from tierflow.providers.structured import complete_structured
from tierflow.providers.tokens import count_tokens
from tierflow.routing.analysis import job_text
from tierflow.routing.errors import ProviderError
from tierflow.routing.experts import Prompt, parse_answer
from tierflow.routing.judging import JudgeGrade, answer_text, chosen_for_judging, judge_prompt
from tierflow.routing.policy import Policy
from tierflow.store.db import transaction
from tierflow.store.judging import JudgeOutcome, begin_judgement, finish_judgement
from tierflow.store.lifecycle import load_job
from tierflow.store.models import Result
from tierflow.tasks.experts import call_tier, request_for
from tierflow.tasks.runtime import Runtime, runtime_for

log = logging.getLogger(__name__)

JUDGE_TASK_NAME = "tierflow.judge"


def send_judging(app: Any, policy: Policy, job_id: str) -> bool:
    """Send the judge task for an accepted job when it is in the policy's judged share."""
    if not chosen_for_judging(job_id, policy.judge_share):
        return False
    app.send_task(JUDGE_TASK_NAME, args=[job_id], queue=policy.ladder[-1].queue)
    return True


@shared_task(name=JUDGE_TASK_NAME, bind=True, ignore_result=True)
def judge(self: Any, job_id: str) -> str:
    return judge_job(runtime_for(self.app), job_id)


def estimate_usd(runtime: Runtime, models: list[str], prompt: Prompt) -> float:
    """The most the judge may cost: two calls (the schema retry) to the dearest of the models,
    each with the whole prompt in and max_tokens out."""
    prices = price_table(runtime.settings.prices)
    tokens_in = count_tokens(prompt.system) + 2 * count_tokens(prompt.user)  # the retry repeats the user
    worst = 0.0
    for ref in models:
        model = ModelRef.parse(ref)
        worst = max(worst, price_for(prices, model.provider, model.model).cost(tokens_in, prompt.max_tokens))
    return 2 * worst


def judge_job(runtime: Runtime, job_id: str) -> str:
    """Judge one accepted job once; what happened: graded, failed, skipped (and why)."""
    policy = runtime.policy()
    with transaction(runtime.sessions) as session:
        job = load_job(session, job_id)
        result = session.execute(select(Result.verdict, Result.output).where(Result.job_id == job_id)).first()
    if job is None or result is None or result[0] != "accept" or job.kind not in runtime.kinds:
        return "skipped: no accepted result"
    prompt = judge_prompt(job_text(runtime.kinds.get(job.kind), job.payload), answer_text(result[1]))
    models = list(policy.tier_models[policy.ladder[-1]])
    estimate = estimate_usd(runtime, models, prompt)
    with transaction(runtime.sessions) as session:
        if not begin_judgement(session, job_id, estimate, policy.judge_budget_usd):
            return "skipped: judged already or over budget"
    outcome = _ask(runtime, models, prompt)
    with transaction(runtime.sessions) as session:
        finish_judgement(session, job_id, outcome)
    if outcome.grade is None:
        log.warning("the judge could not grade %s: %s", job_id, outcome.failure)
        return "failed"
    return "graded"


def _ask(runtime: Runtime, models: list[str], prompt: Prompt) -> JudgeOutcome:
    calls: list[dict[str, Any]] = []
    try:
        completion, answer = complete_structured(
            lambda request: call_tier(runtime, models, request, calls),
            request_for(prompt, runtime),
            lambda text: parse_answer(JudgeGrade, text),
        )
    except ProviderError as exc:
        return JudgeOutcome(_last_model(calls), _cost(calls), None, str(exc))
    grade = JudgeGrade.model_validate({**answer.output, "confidence": answer.confidence})
    return JudgeOutcome(f"{completion.provider}:{completion.model}", _cost(calls), grade)


def _cost(calls: list[dict[str, Any]]) -> float:
    return float(sum(call["cost_usd"] for call in calls))


def _last_model(calls: list[dict[str, Any]]) -> str | None:
    return str(calls[-1]["model"]) if calls else None
