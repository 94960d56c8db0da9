"""Sampled judging's pure parts: the share picked by job id, the budget, the offline judge, the schema."""

from __future__ import annotations

import json

import pytest

from tierflow.providers import rules
from tierflow.providers.base import Completion, CompletionRequest
from tierflow.providers.judge_rules import final_number, offline_grade
from tierflow.providers.server.answers import Answerer, AnswerSource, ReplayBook
from tierflow.providers.structured import complete_structured
from tierflow.routing.errors import ProviderRejected
from tierflow.routing.experts import parse_answer
from tierflow.routing.judging import (
    JudgeGrade,
    answer_text,
    chosen_for_judging,
    judge_prompt,
    read_judge_request,
    unit_score,
    within_budget,
)

IDS = [f"job-{n}" for n in range(4000)]


def test_no_job_is_judged_by_default_and_every_job_at_share_one():
    assert not any(chosen_for_judging(job, 0.0) for job in IDS)
    assert all(chosen_for_judging(job, 1.0) for job in IDS)


def test_the_share_picked_is_close_to_the_policys_and_stable_per_job():
    picked = [job for job in IDS if chosen_for_judging(job, 0.25)]
    assert abs(len(picked) / len(IDS) - 0.25) < 0.03
    assert picked == [job for job in IDS if chosen_for_judging(job, 0.25)]
    # a larger share keeps every job a smaller one picked: raising it never un-judges a job
    assert set(picked) < {job for job in IDS if chosen_for_judging(job, 0.5)}


def test_the_budget_holds_finished_costs_and_running_estimates():
    assert within_budget(0.0, 0.01, 0.01)
    assert within_budget(0.006, 0.004, 0.01)
    assert not within_budget(0.007, 0.004, 0.01)
    assert not within_budget(0.0, 0.001, 0.0)


def test_the_judge_prompt_carries_the_job_and_answer_for_the_offline_answerers():
    prompt = judge_prompt("What is 6 * 7?", "42")
    assert prompt.system.startswith("Task: judge\n")
    assert read_judge_request(prompt.user) == ("What is 6 * 7?", "42")
    assert read_judge_request("What is 6 * 7?") is None
    assert answer_text({"answer": "42"}) == "42"
    assert answer_text({"fields": {"total": "9.50"}}) == '{"fields": {"total": "9.50"}}'


def _grade(text: str) -> JudgeGrade:
    answer = parse_answer(JudgeGrade, text)
    return JudgeGrade.model_validate({**answer.output, "confidence": answer.confidence})


def test_the_offline_judge_matches_final_numbers_against_a_reference():
    user = judge_prompt("How many?", "So 3 x 60 = 180 meters.\n#### 180").user
    right = _grade(offline_grade(user, rules.hardness, "He runs 180 meters.\n\n#### 180"))
    wrong = _grade(offline_grade(user, rules.hardness, "1,080 meters in all"))
    assert right.score > wrong.score and right.score >= 8 and wrong.score <= 3
    assert right.reason.startswith("offline:") and "1080" in wrong.reason
    assert final_number("it costs $1,234.50 in all") == "1234.5"


def test_the_offline_judge_recomputes_arithmetic_without_a_reference():
    good = _grade(offline_grade(judge_prompt("What is 6 * 7?", "42").user, rules.hardness, None))
    bad = _grade(offline_grade(judge_prompt("What is 6 * 7?", "41").user, rules.hardness, None))
    assert (good.score, bad.score) == (10, 1)


def test_the_provider_server_judges_against_the_judge_models_recorded_response():
    book = ReplayBook({"How far?": {"gpt-4-1106-preview": "#### 540", "mixtral": "#### 500"}})
    answerer = Answerer(book, replay_models={"gpt-4o": "gpt-4-1106-preview"})
    prompt = judge_prompt("How far?", "#### 500")
    answer = answerer.answer("gpt-4o", prompt.system, prompt.user)
    assert answer is not None and answer.source is AnswerSource.REPLAY
    assert _grade(answer.text).score <= 3
    unknown = judge_prompt("Something not recorded", "an answer")
    ruled = answerer.answer("gpt-4o", unknown.system, unknown.user)
    assert ruled is not None and ruled.source is AnswerSource.RULES
    assert _grade(ruled.text).reason.startswith("offline:")


def test_the_fake_models_answer_the_judge_prompt_with_a_valid_grade():
    prompt = judge_prompt("What is 5 + 4?", "9")
    assert _grade(rules.answer(prompt.system, prompt.user, 0.97)).score == 10


def _completion(text: str) -> Completion:
    return Completion(text, 10, 10, 0.0, 0.0, "fake", "fake-large", "r")


@pytest.mark.parametrize("bad", ['{"score": 11, "reason": "x", "confidence": 0.5}', "a ten, really"])
def test_a_judge_answer_failing_its_schema_twice_is_rejected_not_graded(bad):
    calls: list[CompletionRequest] = []

    def call(request: CompletionRequest) -> Completion:
        calls.append(request)
        return _completion(bad)

    request = CompletionRequest(system="Task: judge", user="{}", max_tokens=50, timeout_s=1.0)
    with pytest.raises(ProviderRejected, match="did not validate after one retry"):
        complete_structured(call, request, lambda text: parse_answer(JudgeGrade, text))
    assert len(calls) == 2 and "did not validate" in calls[1].user


def test_a_judge_answer_valid_on_the_retry_is_a_grade():
    answers = iter(
        [
            '{"score": 0, "reason": "", "confidence": 2}',
            json.dumps({"score": 7, "reason": "ok", "confidence": 0.6}),
        ]
    )
    request = CompletionRequest(system="Task: judge", user="{}", max_tokens=50, timeout_s=1.0)
    _, answer = complete_structured(
        lambda r: _completion(next(answers)), request, lambda t: parse_answer(JudgeGrade, t)
    )
    assert answer.output == {"score": 7, "reason": "ok"} and unit_score(7) == pytest.approx(6 / 9)
