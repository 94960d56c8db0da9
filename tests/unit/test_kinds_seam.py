"""The kind seam: templates, the acceptance checks, the registry, and scorers that do not widen."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.errors import UnknownKind
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.checks import CHECKS, CheckInput
from tierflow.routing.kinds.extractors import period_rule
from tierflow.routing.kinds.offline import schema_answer
from tierflow.routing.kinds.prompts import expert_prompt
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import CheckSpec, ExpertSpec, ExpertType, KindSpec
from tierflow.routing.kinds.template import render, template_fields, template_problem
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import OutcomeRow, reflect
from tierflow.routing.scorers import CHEAP_FEATURES, prompt_features
from tierflow.routing.states import Tier

NOTE = ExpertSpec(name="note", type=ExpertType.RULE, rule="period", options={"near": "notice"})
READER = ExpertSpec(
    name="reader",
    type=ExpertType.MODEL,
    prompt="{text}",
    answer_schema={
        "required": ["notice_period_days", "team"],
        "properties": {
            "notice_period_days": {"type": ["integer", "null"]},
            "team": {"type": "string", "enum": ["legal", "sales", "billing"]},
        },
    },
)
CONTRACT = KindSpec(name="contract", text="{text}", experts=(READER, NOTE))


def test_templates_name_their_fields_and_drop_lines_whose_fields_are_absent() -> None:
    assert template_fields("{subject}\n{text} {text}") == ["subject", "text"]
    assert render("{subject}\n{text}", {"text": "body"}) == "body"
    assert render("{subject}\n{text}", {"subject": "Hi", "text": "body"}) == "Hi\nbody"
    assert render("{{literal}} {n}", {"n": 3}) == "{literal} 3"
    assert template_problem("a { b") is not None and template_problem("{a} {{b}}") is None


def _seen(outputs: dict[str, dict[str, object]], answer: dict[str, object] | None = None) -> CheckInput:
    outcomes = {name: ExpertOutcome(name, name == "reader", out, 0.8) for name, out in outputs.items()}
    return CheckInput(CONTRACT, outcomes, answer or {}, 0.8)


@pytest.mark.parametrize(
    ("spec", "passing", "failing"),
    [
        (CheckSpec(type="required", fields=("team",)), {"team": "legal"}, {"team": ""}),
        (CheckSpec(type="one_of", fields=("team",), values=("legal",)), {"team": "legal"}, {"team": "ops"}),
        (CheckSpec(type="pattern", fields=("ref",), pattern=r"C-\d+"), {"ref": "C-12"}, {"ref": "12"}),
        (CheckSpec(type="date", fields=("on",)), {"on": "2026-02-01"}, {"on": "soon"}),
        (
            CheckSpec(type="reconcile", items="items", tax="tax", total="total"),
            {"items": ["1.00", "2.50"], "tax": "0.35", "total": "3.85"},
            {"items": ["1.00", "2.50"], "tax": "0.35", "total": "3.90"},
        ),
    ],
)
def test_each_answer_check_passes_good_output_and_names_the_problem_in_bad(
    spec: CheckSpec, passing: dict[str, object], failing: dict[str, object]
) -> None:
    check = CHECKS[spec.type]
    assert check(spec, _seen({}, passing)) == []
    assert len(check(spec, _seen({}, failing))) == 1


def test_agree_compares_experts_within_the_tolerance() -> None:
    spec = CheckSpec(type="agree", fields=("days",), experts=("reader", "note"), tolerance=1)
    assert CHECKS["agree"](spec, _seen({"reader": {"days": 30}, "note": {"days": 31}})) == []
    (problem,) = CHECKS["agree"](spec, _seen({"reader": {"days": 30}, "note": {"days": 90}}))
    assert problem.reason == "reader and note disagree: 30 vs 90"


def test_confidence_and_schema_checks() -> None:
    low = CheckSpec(type="confidence", threshold=0.9)
    assert len(CHECKS["confidence"](low, _seen({"reader": {"team": "legal"}}))) == 1
    schema = CheckSpec(type="schema")
    good = {"reader": {"team": "legal", "notice_period_days": 30}}
    bad = {"reader": {"team": "ops", "notice_period_days": 30}}
    contract = builtin_registry().with_kinds([CONTRACT]).get("contract")
    for name, output in (("good", good), ("bad", bad)):
        outcomes = {n: ExpertOutcome(n, True, o, 0.8) for n, o in output.items()}
        found = CHECKS["schema"](schema, CheckInput(contract, outcomes, {}, 0.8))
        assert (name, len(found)) in {("good", 0), ("bad", 1)}


def test_the_period_rule_reads_the_notice_period_on_either_side_of_the_word() -> None:
    policy = Policy()
    before = period_rule({}, "Either party may end it on 30 days written notice.", policy, {})
    after = period_rule({}, "The buyer may terminate with three months notice.", policy, {})
    assert before.output["notice_period_days"] == 30 and after.output["notice_period_days"] == 90


def test_offline_answers_are_valid_against_the_declared_schema_and_deterministic() -> None:
    registry = builtin_registry().with_kinds([CONTRACT])
    kind = registry.get("contract")
    prompt = expert_prompt(kind, READER, {"text": "Legal terms: three months notice."}, {})
    first = schema_answer(prompt.system, prompt.user, 0.97, 0.8)
    assert first is not None and first == schema_answer(prompt.system, prompt.user, 0.97, 0.8)
    parsed = prompt.parse(first)
    assert parsed.output == {"notice_period_days": 90, "team": "legal"} and parsed.confidence == 0.8
    weak = prompt.parse(schema_answer(prompt.system, prompt.user, 0.55, 0.4) or "")
    assert weak.output["notice_period_days"] == 3, "a weak model takes the months as written"


def test_the_registry_refuses_unknown_rules_duplicates_and_names_it_lacks() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        KindRegistry(
            [CONTRACT.model_copy(update={"experts": (READER, NOTE.model_copy(update={"rule": "x"}))})]
        )
    with pytest.raises(ValueError, match="declared twice"):
        KindRegistry([CONTRACT, CONTRACT])
    with pytest.raises(UnknownKind):
        builtin_registry().get("contract")


def test_scorer_width_stays_the_same_when_a_kind_is_added() -> None:
    texts = ["What is 12 * 34?", "Where is my parcel?"]
    before = prompt_features(texts, None)
    registry = builtin_registry().with_kinds([CONTRACT])
    assert len(registry) == 4
    after = prompt_features(texts, None)
    assert before.shape == after.shape == (2, len(CHEAP_FEATURES))
    assert np.array_equal(before, after)
    assert not any(name.startswith("kind_") for name in CHEAP_FEATURES)


def _rows(kind: str, count: int, seed: int) -> list[OutcomeRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        features = rng.normal(size=len(CHEAP_FEATURES))
        for tier, good in ((Tier.SMALL, features[0] > 0.3), (Tier.LARGE, True)):
            rows.append(OutcomeRow(f"{kind}-{index}", kind, tier, 1, bool(good), features, None, "accept"))
    return rows


def test_a_new_kind_learned_beside_another_leaves_that_kinds_scorers_unchanged() -> None:
    policy = Policy()
    alone = reflect(policy, None, _rows("prompt", 80, 1), None, ["prompt"]).policy
    both = reflect(
        policy, None, _rows("prompt", 80, 1) + _rows("contract", 80, 2), None, ["prompt", "contract"]
    )
    assert alone is not None and both.policy is not None
    assert both.policy.learned["prompt"] == alone.learned["prompt"]
    assert "contract" in both.policy.learned
