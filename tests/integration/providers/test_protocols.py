"""The local provider server's OpenAI and Anthropic protocols through the real SDKs; its runtime control.

Nothing is mocked: the server runs in-process on a free loopback port and every
call goes over HTTP through the official sync clients.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.providers.support import (
    PRICES,
    REPLAY_PROMPT,
    STRONG_RECORDED,
    STRONG_RESPONSE,
    SYSTEM,
    UNRECORDED_PROMPT,
    USER,
    WEAK_RECORDED,
    WEAK_RESPONSE,
    Adapter,
    control,
)
from tierflow.providers import rules
from tierflow.providers.base import CompletionRequest
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.server import Fault, FaultRule, ProviderServer, default_strength
from tierflow.providers.tokens import count_tokens, first_tokens
from tierflow.routing.errors import (
    ProviderRejected,
    ProviderUnavailable,
)

pytestmark = pytest.mark.timeout(30)

# -- the protocols through the SDKs ------------------------------------------------------------------


def test_openai_chat_answered_by_rules_has_consistent_usage(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        max_tokens=200,
        temperature=0.0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}},
        },
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert raw.headers["x-tierflow-answer-source"] == "rules"
    assert text == rules.answer(SYSTEM, USER, default_strength("gpt-4o-mini"))
    assert json.loads(text or "")["answer"] == "84"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == count_tokens(SYSTEM) + count_tokens(USER)
    assert usage.completion_tokens == count_tokens(text or "")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"


def test_openai_developer_role_and_max_completion_tokens_are_understood(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "developer", "content": "Task: draft_reply"},
            {"role": "user", "content": "I want a refund"},
        ],
        max_completion_tokens=3,
    )
    full = rules.answer("Task: draft_reply", "I want a refund", default_strength("gpt-4o"))
    assert "refund request" in full
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == first_tokens(full, 3) == '{"reply":'
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_openai_replay_returns_the_recorded_response_of_the_requested_model(
    openai_client: openai.OpenAI,
) -> None:
    def ask(model: str) -> str | None:
        messages: Any = [{"role": "user", "content": REPLAY_PROMPT}]
        return (
            openai_client.chat.completions.create(model=model, messages=messages).choices[0].message.content
        )

    assert ask("gpt-4o") == STRONG_RESPONSE
    assert ask("gpt-4o-mini") == WEAK_RESPONSE
    assert ask(STRONG_RECORDED) == STRONG_RESPONSE  # recorded names are served as they are


def test_replay_record_without_a_response_is_answered_by_rules(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": UNRECORDED_PROMPT}]
    )
    assert raw.headers["x-tierflow-answer-source"] == "rules"
    assert raw.parse().choices[0].message.content == rules.answer(
        "", UNRECORDED_PROMPT, default_strength("gpt-4o")
    )


def test_anthropic_messages_with_system_blocks_and_usage(anthropic_client: anthropic.Anthropic) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-haiku-4-5",
        max_tokens=300,
        system=[{"type": "text", "text": "Task: draft_reply"}],
        messages=[{"role": "user", "content": "My parcel has not arrived"}],
    )
    message = raw.parse()
    text = message.content[0].text  # type: ignore[union-attr]
    assert text == rules.answer(
        "Task: draft_reply", "My parcel has not arrived", default_strength("claude-haiku-4-5")
    )
    assert message.usage.input_tokens == count_tokens("Task: draft_reply") + count_tokens(
        "My parcel has not arrived"
    )
    assert message.usage.output_tokens == count_tokens(text)
    assert message.stop_reason == "end_turn"
    assert re.fullmatch(r"[0-9a-f]{24}", raw.request_id or "")


def test_anthropic_replay_returns_the_recorded_response(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=400,
        system="be brief",
        messages=[{"role": "user", "content": REPLAY_PROMPT}],
    )
    assert message.content[0].text == STRONG_RESPONSE  # type: ignore[union-attr]


def test_unknown_model_is_not_found_in_each_protocol(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.NotFoundError) as from_openai:
        openai_client.chat.completions.create(
            model="gpt-9-imaginary", messages=[{"role": "user", "content": "hi"}]
        )
    assert from_openai.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as from_anthropic:
        anthropic_client.messages.create(
            model="claude-imaginary", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert from_anthropic.value.type == "not_found_error"
    assert from_anthropic.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": from_anthropic.value.api_message},
        "request_id": from_anthropic.value.request_id,
    }


def test_bad_requests_are_refused_in_the_callers_protocol(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as from_openai:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": "no user"}]
        )
    assert from_openai.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as from_anthropic:
        anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    assert from_anthropic.value.type == "invalid_request_error"


def test_models_are_listed_in_both_protocols(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    served = {model.id for model in openai_client.models.list()}
    assert {"gpt-4o", "claude-haiku-4-5", STRONG_RECORDED, WEAK_RECORDED} <= served
    assert {model.id for model in anthropic_client.models.list()} == served
    # embeddings (real vectors, or a 501 without the extra) are tested in test_embeddings.py


def test_a_wrong_api_key_is_refused_and_not_echoed(server: ProviderServer) -> None:
    wrong = "sk-wrong-key-Hh3kP0"
    provider = OpenAIProvider(api_key=wrong, prices=PRICES, base_url=server.openai_base_url)
    with pytest.raises(ProviderRejected) as raised:
        provider.complete("gpt-4o", CompletionRequest(system="", user="hi"))
    assert "HTTP 401" in raised.value.reason
    assert wrong not in str(raised.value) and wrong not in repr(raised.value) and wrong not in repr(provider)
    provider.close()


# -- runtime control ---------------------------------------------------------------------------------


def test_faults_change_at_runtime_over_http(adapter: Adapter, server: ProviderServer) -> None:
    status, body = control(server, "/_control/faults", {"rules": [{"fault": "server_error", "every": 2}]})
    assert status == 200 and body["ok"] is True
    outcomes = []
    for _ in range(4):
        try:
            adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
            outcomes.append("ok")
        except ProviderUnavailable:
            outcomes.append("fault")
    assert outcomes == ["ok", "fault", "ok", "fault"]
    status, stats = control(server, "/_control/stats")
    assert status == 200
    assert stats["requests"] == 4
    assert stats["by_model"] == {adapter.weak: 4}
    assert stats["by_outcome"] == {"rules": 2, "server_error": 2}
    assert stats["faults"][0]["seen"] == 4 and stats["faults"][0]["fired"] == 2
    control(server, "/_control/faults", {"rules": []})
    assert adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER)).text


def test_invalid_control_bodies_are_refused(server: ProviderServer) -> None:
    status, body = control(server, "/_control/faults", {"rules": [{"fault": "meteor_strike"}]})
    assert status == 400 and body["error"]["detail"][0]["loc"] == ["rules", 0, "fault"]
    status, _ = control(
        server, "/_control/faults", {"rules": [{"fault": "timeout", "every": 2, "probability": 0.5}]}
    )
    assert status == 400
    status, _ = control(server, "/_control/latency", {"default": {"base_ms": -5}})
    assert status == 400
    assert server.stats()["faults"] == []


def test_seeded_probability_faults_repeat_across_servers(replay_file: Path) -> None:
    def pattern() -> list[bool]:
        rule = FaultRule(fault=Fault.SERVER_ERROR, probability=0.5)
        with ProviderServer(port=0, faults=[rule], seed=123) as fresh:
            client = openai.OpenAI(
                base_url=fresh.openai_base_url, api_key="unused", max_retries=0, timeout=5.0
            )
            seen = []
            for _ in range(12):
                try:
                    client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": "1 + 1"}]
                    )
                    seen.append(False)
                except openai.InternalServerError:
                    seen.append(True)
            client.close()
        return seen

    first = pattern()
    assert first == pattern()
    assert any(first) and not all(first)
