"""Sampled judging: which accepted answers a judge grades, what it is asked, what it must answer.

Owns `chosen_for_judging` (a stable share of jobs, picked by a hash of the job id),
the judge's prompt (`judge_prompt`: the job's text and the accepted answer, as one
JSON object the offline answerers can read back), its answer (`JudgeGrade`: a score
from 1 to 10 and a reason, validated like any expert's structured output), and the
budget arithmetic (`within_budget`). A grade is feedback: it never changes a job's
result. Pure: pydantic and the standard library only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from tierflow.routing.experts import ExpertAnswer, Prompt, system_prompt

JUDGE_TASK = "judge"
SCORE_LOW, SCORE_HIGH = 1, 10
JUDGE_MAX_TOKENS = 300
JUDGE_INSTRUCTION = (
    "You grade an answer another model gave to a job. The user message is one JSON object: "
    '"job" is the text of the job, "answer" the answer given. Give "score", an integer from '
    f"{SCORE_LOW} (wrong or useless) to {SCORE_HIGH} (correct and complete), and a short "
    '"reason" for the score.'
)


class JudgeGrade(ExpertAnswer):
    """A judge's answer: its score, why, and its confidence in the score."""

    score: int = Field(ge=SCORE_LOW, le=SCORE_HIGH)
    reason: str = Field(min_length=1, max_length=1000)


def chosen_for_judging(job_id: str, share: float) -> bool:
    """Whether the job is in the judged share: the first 8 bytes of SHA-256(job id) as a number
    in [0, 1) fall below `share`. The same job is always chosen or not, on every worker."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"judge\n{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def answer_text(output: dict[str, Any] | None) -> str:
    """The accepted answer as the judge reads it: its text field when it has one, else its JSON."""
    if not output:
        return ""
    for key in ("answer", "reply"):
        value = output.get(key)
        if isinstance(value, str):
            return value
    return json.dumps(output, sort_keys=True)


def judge_prompt(job: str, answer: str) -> Prompt:
    """What the judge is asked about one job and its accepted answer."""
    return Prompt(
        task=JUDGE_TASK,
        system=system_prompt(JUDGE_TASK, JUDGE_INSTRUCTION, list(JudgeGrade.model_fields)),
        user=json.dumps({"job": job, "answer": answer}),
        schema=JudgeGrade,
        max_tokens=JUDGE_MAX_TOKENS,
    )


def read_judge_request(user: str) -> tuple[str, str] | None:
    """(job, answer) back from a judge prompt's user message; None when it is not one."""
    try:
        body = json.loads(user)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("job"), str):
        return None
    answer = body.get("answer")
    return (body["job"], answer) if isinstance(answer, str) else None


def unit_score(score: float) -> float:
    """A judge's score on [0, 1]: 1 -> 0, 10 -> 1."""
    return (score - SCORE_LOW) / (SCORE_HIGH - SCORE_LOW)


def within_budget(spent_usd: float, estimate_usd: float, budget_usd: float) -> bool:
    """Whether one more judgement, estimated at `estimate_usd`, fits in what today's budget has
    left; `spent_usd` counts finished judgements at their cost and running ones at their estimate."""
    return spent_usd + estimate_usd <= budget_usd + 1e-12
