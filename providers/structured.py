"""Structured output: validate a completion against a schema, retry once with the error.

Output that still does not validate is reported as ProviderRejected and never passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from tierflow.providers.base import Completion, CompletionRequest
from tierflow.routing.errors import ProviderRejected

T = TypeVar("T")


def retry_prompt(user: str, problem: str) -> str:
    return (
        f"{user}\n\nYour previous answer did not validate: {problem}\n"
        "Answer again with one JSON object that follows the schema exactly."
    )


def complete_structured(
    call: Callable[[CompletionRequest], Completion],
    request: CompletionRequest,
    validate: Callable[[str], T],
) -> tuple[Completion, T]:
    """Call, validate; on a validation error call once more with the error in the prompt.

    `validate` raises ValueError (or a subclass) for output that does not fit.
    """
    completion = call(request)
    try:
        return completion, validate(completion.text)
    except ValueError as exc:
        problem = str(exc)
    completion = call(replace(request, user=retry_prompt(request.user, problem)))
    try:
        return completion, validate(completion.text)
    except ValueError as exc:
        reason = f"output did not validate after one retry: {exc}"
        raise ProviderRejected(completion.provider, completion.model, reason) from None
