"""Live calls to the real OpenAI and Anthropic APIs: `pytest -m live`, with keys set.

Not collected by default (pyproject's addopts deselect the `live` marker) and never
run under CI. Each test runs only when its provider's key is in the environment
(TIERFLOW_OPENAI_API_KEY / TIERFLOW_ANTHROPIC_API_KEY) and makes one small call.
"""

from __future__ import annotations

import os

import pytest

from tierflow.providers.base import CompletionRequest
from tierflow.providers.pricing import price_table
from tierflow.routing.experts import parse_answer
from tierflow.routing.kinds.builtin import Answer
from tierflow.worker.settings import load_settings

pytestmark = pytest.mark.live

REQUEST = CompletionRequest(
    system='Task: answer\nAnswer with one JSON object with the keys "confidence", "answer".',
    user="What is 12 * 12?",
    max_tokens=60,
    timeout_s=30,
    json_schema=Answer.model_json_schema(),
)


@pytest.fixture(autouse=True)
def _never_in_ci() -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("live tests must not run in CI; run them by hand with `pytest -m live`")


def test_openai_live_completion_has_usage_and_cost() -> None:
    settings = load_settings()
    if settings.openai_api_key is None:
        pytest.skip("TIERFLOW_OPENAI_API_KEY is not set")
    from tierflow.providers.openai import OpenAIProvider

    provider = OpenAIProvider(api_key=settings.openai_api_key, prices=price_table(settings.prices))
    completion = provider.complete("gpt-4o-mini", REQUEST)
    assert completion.input_tokens > 0 and completion.output_tokens > 0 and completion.cost_usd > 0
    assert parse_answer(Answer, completion.text).output["answer"].strip().startswith("144")


def test_anthropic_live_completion_has_usage_and_cost() -> None:
    settings = load_settings()
    if settings.anthropic_api_key is None:
        pytest.skip("TIERFLOW_ANTHROPIC_API_KEY is not set")
    from tierflow.providers.anthropic import AnthropicProvider

    provider = AnthropicProvider(api_key=settings.anthropic_api_key, prices=price_table(settings.prices))
    completion = provider.complete("claude-haiku-4-5", REQUEST)
    assert completion.input_tokens > 0 and completion.output_tokens > 0 and completion.cost_usd > 0
    assert "144" in completion.text
