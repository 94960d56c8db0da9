"""The decomposition's rules split, the LLM proposal's schema and bounds, and the merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tierflow.routing.decompose import (
    ChildEnd,
    DecompositionRefused,
    Split,
    Subtask,
    child_payload,
    held_parts,
    merged_output,
    plan_split,
    split_rules,
    validated,
)
from tierflow.routing.errors import InputError
from tierflow.routing.kinds.builtin import SUPPORT
from tierflow.routing.kinds.files import parse_kinds
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.kinds.spec import DecomposeSpec, ExpertSpec, ExpertType, ExpertWhen, KindSpec
from tierflow.routing.policy import Policy
from tierflow.worker.cli_eval_decomposition import evaluate_arm, read_pairs

SPEC = DecomposeSpec()
INTENTS = ("refund", "billing", "shipping", "technical", "account", "general")


def test_an_enumerated_list_splits_into_its_items_without_greeting_or_sign_off():
    text = (
        "Hello team, I have a few questions:\n"
        "1) Why was I charged twice for the March invoice?\n"
        "2) Can you change the delivery address of order 1182\n   to my office instead?\n"
        "Thanks, Priya"
    )
    assert split_rules(text, SPEC) == [
        "Why was I charged twice for the March invoice?",
        "Can you change the delivery address of order 1182 to my office instead?",
    ]


def test_sentences_that_open_a_new_ask_split_the_text_and_the_preamble_is_dropped():
    text = (
        "I have two questions: my refund for the broken kettle has not arrived. It was approved on "
        "the 3rd. Separately, the app logs me out every few minutes."
    )
    assert split_rules(text, SPEC) == [
        "My refund for the broken kettle has not arrived. It was approved on the 3rd.",
        "The app logs me out every few minutes.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "My parcel has not arrived and it was due on Monday. Can you check the tracking?",
        "The invoice total is wrong. It lists two seats but we only have one.",
        "Thanks, but my invoice is still wrong and nobody has answered for a week.",
    ],
)
def test_one_ask_is_not_split(text):
    assert split_rules(text, SPEC) == []


def test_a_part_too_short_to_be_an_ask_stays_with_the_one_before():
    assert split_rules("Please refund order 1182. Also, thanks.", SPEC) == []


def test_more_asks_than_allowed_leave_the_job_whole_saying_why():
    items = "\n".join(f"{n}. Question number {n} about my account" for n in range(1, 7))
    split = plan_split(SUPPORT, {"text": items}, 0, INTENTS)
    assert split.parts == () and "over max_subtasks 4" in split.reasons[0]


def test_a_child_at_the_kinds_depth_never_splits_and_a_kind_without_decompose_never_does():
    text = "1. Refund my order please.\n2. Where is my parcel now?"
    assert len(plan_split(SUPPORT, {"text": text}, 0, INTENTS).parts) == 2
    assert plan_split(SUPPORT, {"text": text}, 1, INTENTS) == Split()
    plain = SUPPORT.model_copy(update={"decompose": None})
    assert plan_split(plain, {"text": text}, 0, INTENTS) == Split()


def _proposal(*subtasks: dict[str, str]) -> str:
    return json.dumps({"subtasks": list(subtasks), "confidence": 0.9})


def test_a_valid_proposal_gives_its_subtasks():
    text = _proposal(
        {"text": " Refund the kettle ", "intent": "refund"}, {"text": "Fix the app", "intent": ""}
    )
    assert validated(text, SPEC, INTENTS) == (Subtask("Refund the kettle", "refund"), Subtask("Fix the app"))


@pytest.mark.parametrize(
    ("subtasks", "why"),
    [
        ([{"text": f"ask {n}", "intent": "general"} for n in range(5)], "proposes 5 sub-tasks, at most 4"),
        (
            [{"text": "ask", "intent": "general"}, {"text": "  ", "intent": "general"}],
            "sub-task 2 has empty text",
        ),
        ([{"text": "ask", "intent": "astrology"}], "astrology is not a known intent"),
    ],
)
def test_a_proposal_beyond_the_bounds_is_refused(subtasks, why):
    with pytest.raises(DecompositionRefused, match=why):
        validated(_proposal(*subtasks), SPEC, INTENTS)


def test_the_llm_is_asked_only_where_the_kind_says_and_a_refusal_runs_the_job_whole_stronger():
    text = "I was charged twice this month and want it fixed. My parcel never arrived either, where is it?"
    asked: list[str] = []

    def llm(prompt):
        asked.append(prompt.task)
        return _proposal(*({"text": f"ask {n}", "intent": "general"} for n in range(6)))

    assert plan_split(SUPPORT, {"text": text}, 0, INTENTS, llm) == Split() and asked == []
    refused = plan_split(SUPPORT, {"text": text}, 0, INTENTS, llm, unsure=True)
    assert asked == ["decompose"] and refused.refused and refused.parts == ()
    assert "proposes 6 sub-tasks" in refused.reasons[0]

    def two(prompt):
        return _proposal(
            {"text": "charged twice", "intent": "billing"}, {"text": "parcel", "intent": "shipping"}
        )

    always = SUPPORT.model_copy(update={"decompose": DecomposeSpec(llm="always")})
    split = plan_split(always, {"text": text}, 0, INTENTS, two)
    assert (split.by, [p.intent for p in split.parts]) == ("llm", ["billing", "shipping"])
    never = SUPPORT.model_copy(update={"decompose": DecomposeSpec(llm="never")})
    assert plan_split(never, {"text": text}, 0, INTENTS, two, unsure=True) == Split()


def test_a_childs_payload_is_its_ask_without_the_parents_subject():
    payload = {"text": "both asks", "subject": "Two things", "customer": "c-19"}
    assert child_payload(SUPPORT, payload, "one ask") == {"text": "one ask", "customer": "c-19"}


def _end(part: int, state: str, reply: str | None = None) -> ChildEnd:
    return ChildEnd(f"p~{part + 1}", part, state, "general_support", "small", 0.9, {"reply": reply})


def test_the_merge_lists_every_part_in_order_and_names_the_ones_held():
    asks = (Subtask("first ask"), Subtask("second ask"))
    children = [_end(1, "needs_review", "held"), _end(0, "succeeded", "answer one")]
    merged = merged_output(SUPPORT, children, asks)
    assert merged["reply"] == "1. first ask\nanswer one\n\n2. second ask\n[needs_review]"
    assert [part["job_id"] for part in merged["parts"]] == ["p~1", "p~2"]
    assert held_parts(children) == ["part 2 (general_support) ended needs_review"]


def test_a_merge_must_name_a_merge_expert_and_a_decomposing_kind_a_chat_field():
    writer = ExpertSpec(name="writer", type=ExpertType.MODEL, prompt="{text}", when=ExpertWhen.MERGE)
    answerer = ExpertSpec(name="answerer", type=ExpertType.MODEL, prompt="{text}")
    base = {"name": "asks", "text": "{text}", "chat_field": "text", "experts": (answerer, writer)}
    assert KindSpec(**base, decompose=DecomposeSpec(merge="writer")).decompose is not None
    with pytest.raises(ValidationError, match="not 'concatenate' nor a model expert"):
        KindSpec(**base, decompose=DecomposeSpec(merge="answerer"))
    with pytest.raises(ValidationError, match="decompose needs chat_field"):
        KindSpec(**{**base, "chat_field": None}, decompose=DecomposeSpec())
    with pytest.raises(ValidationError):
        DecomposeSpec(max_subtasks=1)


def test_a_kinds_file_with_a_bad_decompose_table_is_refused_naming_its_line():
    text = """
[[kind]]
name = "asks"
text = "{text}"
chat_field = "text"

[kind.payload.properties.text]
type = "string"

[[kind.expert]]
name = "answerer"
type = "model"
prompt = "{text}"

[kind.expert.answer]
required = ["reply"]

[kind.decompose]
max_subtasks = 40
"""
    kinds, problems = parse_kinds(text, "asks.toml", {}, (), ())
    assert kinds == []
    found = [(p.line, p.field) for p in problems]
    assert (19, "kind[0].decompose.max_subtasks") in found, [str(p) for p in problems]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_example_multi_ask_tickets_are_split_and_routed_as_the_docs_say():
    pairs = read_pairs(EXAMPLES / "multi_ask.jsonl", EXAMPLES / "multi_ask.gold.jsonl")
    rules, with_llm = (evaluate_arm(pairs, builtin_registry(), Policy(), llm) for llm in (False, True))
    assert rules["precision"] >= 0.9 and rules["recall"] >= 0.8
    assert with_llm["recall"] > rules["recall"], "the LLM stage finds asks the rules cannot"
    assert min(rules["specialist_accuracy"], with_llm["specialist_accuracy"]) >= 0.9
    assert rules["cost_vs_large"] < 0.2, "each ask on its own tier costs a fraction of the whole on large"


def test_gold_for_a_job_the_file_lacks_is_an_error_naming_it(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "kind": "support", "payload": {"text": "hello"}}\n')
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "a", "asks": [{"text": "hello"}]}\n{"id": "b", "asks": [{"text": "x"}]}\n')
    with pytest.raises(InputError, match="gold for jobs not in .*: b"):
        read_pairs(jobs, gold)
    gold.write_text('{"id": "a", "asks": []}\n')
    with pytest.raises(InputError, match="gold.jsonl:1: asks"):
        read_pairs(jobs, gold)
