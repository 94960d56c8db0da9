"""Structured output: one retry with the validation error, then ProviderRejected."""

from __future__ import annotations

import pytest

from tierflow.providers.base import Completion, CompletionRequest
from tierflow.providers.structured import complete_structured
from tierflow.routing.errors import ProviderRejected
from tierflow.routing.experts import parse_answer
from tierflow.routing.kinds.builtin import DraftReply

REQUEST = CompletionRequest(system="Task: draft_reply", user="I cannot log in")


class Script:
    """A provider stand-in that answers from a list and remembers what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[CompletionRequest] = []

    def __call__(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        return Completion(self.answers.pop(0), 10, 5, 0.001, 0.01, "fake", "fake-small", "r")


def validate(text: str):  # type: ignore[no-untyped-def]
    return parse_answer(DraftReply, text)


def test_valid_output_is_taken_at_once() -> None:
    script = Script('{"reply": "Reset link sent.", "confidence": 0.9}')
    _, answer = complete_structured(script, REQUEST, validate)
    assert answer.output == {"reply": "Reset link sent."} and len(script.requests) == 1


def test_invalid_output_is_retried_once_with_the_validation_error() -> None:
    script = Script('{"reply": "Reset link sent."}', '{"reply": "Reset link sent.", "confidence": 0.7}')
    _, answer = complete_structured(script, REQUEST, validate)
    assert answer.confidence == 0.7 and len(script.requests) == 2
    assert "confidence: Field required" in script.requests[1].user
    assert script.requests[1].user.startswith(REQUEST.user)


def test_output_invalid_twice_is_rejected_not_passed_on() -> None:
    script = Script("not json", '{"reply": 1, "confidence": 0.5}')
    with pytest.raises(ProviderRejected) as caught:
        complete_structured(script, REQUEST, validate)
    assert (caught.value.provider, caught.value.model) == ("fake", "fake-small")
    assert "after one retry" in caught.value.reason and "reply" in caught.value.reason
    assert len(script.requests) == 2
