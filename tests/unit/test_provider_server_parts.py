"""The local provider server's pure parts: fault and latency plans, replay book, answers, wire parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tierflow.providers import rules
from tierflow.providers.server.answers import (
    Answer,
    Answerer,
    AnswerSource,
    ReplayBook,
    default_strength,
    in_envelope,
)
from tierflow.providers.server.anthropic_wire import AnthropicWire
from tierflow.providers.server.app import loopback_host
from tierflow.providers.server.faults import Fault, FaultPlan, FaultRule, Latency, LatencyPlan, LatencySpec
from tierflow.providers.server.openai_wire import OpenAIWire
from tierflow.providers.server.wire import ChatCall, ErrorKind, WireError, reply_to
from tierflow.routing.errors import ConfigError, InputError
from tierflow.routing.experts import Prompt
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.kinds.spec import KindSpec

KINDS = builtin_registry()
DOCUMENT = KINDS.get("document")
PROMPT = KINDS.get("prompt")


def draws(plan: FaultPlan, model: str, n: int) -> list[str | None]:
    return [rule.fault.value if (rule := plan.draw(model)) else None for _ in range(n)]


def test_every_nth_fault_fires_on_exactly_those_requests() -> None:
    plan = FaultPlan([FaultRule(fault=Fault.RATE_LIMIT, every=3)])
    assert draws(plan, "m", 7) == [None, None, "rate_limit", None, None, "rate_limit", None]


def test_a_model_rule_leaves_other_models_alone() -> None:
    plan = FaultPlan([FaultRule(fault=Fault.TIMEOUT, model="slow")])
    assert draws(plan, "fast", 2) == [None, None]
    assert draws(plan, "slow", 2) == ["timeout", "timeout"]


def test_limit_bounds_how_often_a_rule_fires() -> None:
    plan = FaultPlan([FaultRule(fault=Fault.SERVER_ERROR, limit=2)])
    assert draws(plan, "m", 4) == ["server_error", "server_error", None, None]


def test_first_firing_rule_wins_and_every_rule_counts() -> None:
    plan = FaultPlan([FaultRule(fault=Fault.UNAVAILABLE, every=2), FaultRule(fault=Fault.MALFORMED, every=3)])
    assert draws(plan, "m", 6) == [None, "unavailable", "malformed", "unavailable", None, "unavailable"]
    assert [rule["seen"] for rule in plan.snapshot()] == [6, 6]


def test_probability_faults_are_seeded() -> None:
    rule = FaultRule(fault=Fault.SERVER_ERROR, probability=0.3)
    first = draws(FaultPlan([rule], seed=5), "m", 50)
    assert first == draws(FaultPlan([rule], seed=5), "m", 50)
    assert 5 <= first.count("server_error") <= 25


def test_replacing_the_plan_restarts_counters() -> None:
    plan = FaultPlan([FaultRule(fault=Fault.RATE_LIMIT, every=2)])
    plan.draw("m")
    plan.replace([FaultRule(fault=Fault.RATE_LIMIT, every=2)])
    assert draws(plan, "m", 2) == [None, "rate_limit"]


def test_fault_rules_refuse_two_triggers_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        FaultRule(fault=Fault.TIMEOUT, every=2, probability=0.5)
    with pytest.raises(ValidationError):
        FaultRule(fault=Fault.TIMEOUT, probability=1.5)
    with pytest.raises(ValidationError):
        FaultRule.model_validate({"fault": "timeout", "every": 0})


def test_latency_is_base_plus_seeded_jitter_per_model() -> None:
    spec = LatencySpec(default=Latency(base_ms=10), models={"slow": Latency(base_ms=100, jitter_ms=50)})
    plan = LatencyPlan(spec, seed=1)
    assert plan.draw_s("other") == 0.010
    slow = [plan.draw_s("slow") for _ in range(20)]
    assert all(0.100 <= s <= 0.150 for s in slow) and len(set(slow)) > 1
    again = LatencyPlan(spec, seed=1)
    again.draw_s("other")
    assert [again.draw_s("slow") for _ in range(20)] == slow


def write_replay(path: Path, *records: object) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    return path


def test_replay_book_reads_responses_and_first_record_wins(tmp_path: Path) -> None:
    path = write_replay(
        tmp_path / "r.jsonl",
        {
            "id": "a",
            "prompt": "Q1",
            "outcomes": {"m1": {"correct": True, "response": "first"}, "m2": {"correct": 0}},
        },
        {"id": "b", "prompt": "Q1", "outcomes": {"m1": {"correct": True, "response": "second"}}},
    )
    book = ReplayBook.load([path])
    assert book.lookup("Q1", "m1") == "first"
    assert book.lookup("Q1", "m2") is None
    assert book.lookup("Q2", "m1") is None
    assert book.models() == {"m1"}


def test_replay_book_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "outcomes": {}}\n{"prompt": "no outcomes"}\n', encoding="utf-8")
    with pytest.raises(InputError) as raised:
        ReplayBook.load([path])
    assert raised.value.line == 2


def test_answerer_prefers_replay_then_rules_then_nothing() -> None:
    book = ReplayBook({"Q": {"recorded-strong": "recorded answer"}})
    answerer = Answerer(book, models=["tiny-mini"], replay_models={"alias": "recorded-strong"})
    assert answerer.answer("alias", "", "Q") == answerer.answer("recorded-strong", "", "Q")
    assert answerer.answer("alias", "", "Q").source is AnswerSource.REPLAY  # type: ignore[union-attr]
    by_rules = answerer.answer("tiny-mini", "Task: answer", "2 + 2")
    assert by_rules is not None and by_rules.source is AnswerSource.RULES
    assert by_rules.text == rules.answer("Task: answer", "2 + 2", default_strength("tiny-mini"))
    assert answerer.answer("unknown", "", "Q") is None
    assert answerer.models() == ["alias", "recorded-strong", "tiny-mini"]


def test_default_strength_by_name() -> None:
    assert (
        default_strength("gpt-4o-mini") < default_strength("claude-sonnet-4-6") < default_strength("gpt-4o")
    )
    assert default_strength("claude-haiku-4-5") == default_strength("local-small")


def test_reply_is_cut_at_max_tokens() -> None:
    call = ChatCall("m", "", "u", prompt_tokens=3, max_tokens=2)
    sentence = "The quick brown fox jumps over the lazy dog."  # 10 tokens in cl100k_base
    reply = reply_to(call, sentence)
    assert (reply.text, reply.completion_tokens, reply.truncated, reply.total_tokens) == (
        "The quick",
        2,
        True,
        5,
    )
    whole = reply_to(ChatCall("m", "", "u", 3, None), sentence)
    assert (whole.text, whole.completion_tokens, whole.truncated) == (sentence, 10, False)


def test_openai_wire_reads_system_developer_and_last_user_message() -> None:
    call = OpenAIWire().parse_chat(
        {
            "model": "m",
            "max_completion_tokens": 9,
            "messages": [
                {"role": "system", "content": "S1"},
                {"role": "user", "content": "old"},
                {"role": "assistant", "content": None},
                {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
                {"role": "user", "content": [{"type": "text", "text": "new"}]},
            ],
        }
    )
    assert (call.system, call.user, call.max_tokens) == ("S1\nS2", "new", 9)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ],
)
def test_openai_wire_refuses_what_it_cannot_serve(body: object) -> None:
    with pytest.raises(WireError) as raised:
        OpenAIWire().parse_chat(body)
    assert raised.value.kind is ErrorKind.INVALID_REQUEST and raised.value.status == 400


def test_anthropic_wire_requires_max_tokens_and_reads_system_blocks() -> None:
    wire = AnthropicWire()
    call = wire.parse_chat(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            "messages": [{"role": "user", "content": "hello"}],
        }
    )
    assert (call.system, call.user, call.max_tokens) == ("A\nB", "hello", 5)
    with pytest.raises(WireError):
        wire.parse_chat({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    body = wire.error_body(ErrorKind.RATE_LIMIT, "slow down", "rid")
    assert body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "rid",
    }


def test_api_keys_are_read_from_each_protocols_header() -> None:
    assert OpenAIWire().api_key({"authorization": "Bearer k1"}) == "k1"
    assert AnthropicWire().api_key({"x-api-key": "k2"}) == "k2"
    assert OpenAIWire().api_key({"x-api-key": "k2"}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::1", "example.com"])
def test_the_server_binds_ipv4_loopback_only(host: str) -> None:
    with pytest.raises(ConfigError):
        loopback_host(host)


def test_localhost_means_127_0_0_1() -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"


def _built(kind: KindSpec, name: str, payload: dict[str, Any]) -> Prompt:
    expert = kind.expert(name)
    assert expert is not None and expert.build is not None
    return expert.build(payload, {})


def test_a_recorded_plain_answer_is_served_as_the_json_object_the_expert_asks_for() -> None:
    recorded = 'She pays 3 x 6 = <<3*6=18>>18 dollars, "all in".\n#### 18'
    question = "Three books at 6 dollars each: how much?"
    answerer = Answerer(ReplayBook({question: {"weak": recorded}}), models=[], strengths={"weak": 0.55})
    for name, kind in (("answerer", PROMPT), ("verifier", PROMPT)):
        asked = _built(kind, name, {"prompt": question})
        served = answerer.answer("weak", asked.system, asked.user)
        assert served is not None and served.source is AnswerSource.REPLAY
        parsed = asked.parse(served.text)
        assert parsed.output == {"answer": recorded}  # word for word
        assert parsed.confidence == rules.confidence(0.55, question)
    # already an object, or no JSON asked for: the recording is served as it is
    assert in_envelope('{"answer": "18", "confidence": 0.4}', asked.system, question, 0.55).endswith("0.4}")
    assert in_envelope(recorded, "Answer the question.", question, 0.55) == recorded
    verbatim = Answerer(ReplayBook({question: {"weak": recorded}}), models=[], envelope=False)
    assert verbatim.answer("weak", asked.system, question) == Answer(recorded, AnswerSource.REPLAY)
    fields = _built(DOCUMENT, "extractor", {"text": question})
    assert in_envelope(recorded, fields.system, question, 0.55) == recorded  # no text key to put it under
