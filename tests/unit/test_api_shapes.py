"""OpenAI's wire shapes: batch lines in (with the reason a line is refused), output lines out."""

from __future__ import annotations

import pytest

from tierflow.api.shapes import line_job, output_line, prompt_of
from tierflow.store.api_batches import Outcome


def _line(**changes: object) -> dict[str, object]:
    line: dict[str, object] = {
        "custom_id": "c1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tierflow/auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}]},
    }
    line.update(changes)
    return line


def test_a_good_line_becomes_a_prompt_job_of_the_tenant() -> None:
    custom_id, job = line_job(_line(), "oa-1", "acme")
    assert custom_id == "c1"
    assert job == {
        "id": "oa-1",
        "kind": "prompt",
        "payload": {"prompt": "What is 2 + 2?"},
        "metadata": {"tenant": "acme"},
    }


def test_a_line_whose_metadata_names_a_kind_becomes_a_job_of_that_kind() -> None:
    _, job = line_job(_line(metadata={"kind": "support"}), "oa-1", None)
    assert job["kind"] == "support" and job["payload"] == {"text": "What is 2 + 2?"} and job["metadata"] == {}


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"custom_id": ""}, "custom_id"),
        ({"custom_id": 7}, "custom_id"),
        ({"method": "GET"}, "method"),
        ({"url": "/v1/embeddings"}, "url"),
        ({"metadata": {"kind": "poem"}}, "metadata.kind"),
        ({"body": []}, "body"),
        ({"body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}}, "body.model"),
        ({"body": {"model": "tierflow/auto", "messages": []}}, "body.messages"),
        (
            {
                "body": {
                    "model": "tierflow/auto",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                }
            },
            "body.stream",
        ),
        (
            {
                "body": {
                    "model": "tierflow/auto",
                    "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
                }
            },
            "body.messages.0.content",
        ),
    ],
)
def test_a_bad_line_is_refused_naming_the_field(changes: dict[str, object], param: str) -> None:
    with pytest.raises(ValueError) as refused:
        line_job(_line(**changes), "oa-1", None)
    assert str(refused.value).split(": ", 1)[0] == param


def test_several_messages_keep_their_roles_in_the_prompt() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "What is 3 * 3?"}]},
        ],
    }
    assert prompt_of(body) == "system: Answer briefly.\n\nuser: What is 3 * 3?"


def test_an_accepted_job_is_an_output_line_with_the_tier_model_usage_and_cost() -> None:
    outcome = Outcome(
        job_id="oa-9",
        state="succeeded",
        error=None,
        output={"answer": "4"},
        tier="medium",
        model="claude-sonnet-4-6",
        verdict="accept",
        quality=0.9,
        input_tokens=30,
        output_tokens=5,
        cost_usd=0.00012,
        tier_path=["small", "medium"],
        custom_id="c1",
        line=1,
    )
    line = output_line(outcome, 1_700_000_000)
    body = line["response"]["body"]
    assert line["custom_id"] == "c1" and line["error"] is None and line["response"]["request_id"] == "oa-9"
    assert body["model"] == "tierflow/medium:claude-sonnet-4-6"
    assert body["choices"][0]["message"]["content"] == "4"
    assert body["usage"] == {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
    assert body["tierflow"]["cost_usd"] == 0.00012 and body["tierflow"]["tier_path"] == ["small", "medium"]


@pytest.mark.parametrize(
    ("state", "error", "code"),
    [
        ("failed", "cancelled", "batch_cancelled"),
        ("failed", "no tier answered", "job_failed"),
        ("needs_review", None, "needs_review"),
    ],
)
def test_a_job_without_an_accepted_answer_is_an_error_line(state: str, error: str | None, code: str) -> None:
    line = output_line(Outcome("oa-9", state, error, custom_id="c2"), 0)
    assert line["response"] is None and line["error"]["code"] == code and line["error"]["message"]


def test_a_job_that_needs_clarification_is_an_error_line_whose_message_is_the_question() -> None:
    question = "Which order is the refund for?"
    asked = Outcome("oa-10", "needs_clarification", None, {"question": question}, custom_id="c3")
    line = output_line(asked, 0)
    assert line["response"] is None
    assert line["error"] == {"code": "needs_clarification", "message": question}
