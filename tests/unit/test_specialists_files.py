"""Specialists declared in a kinds file: a good declaration loads, each mistake is reported as
FILE:LINE: key: reason, and the example kinds files' specialists route as they say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tierflow.routing.analysis import analyze_rules
from tierflow.routing.decision import decide
from tierflow.routing.errors import KindsRejected
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier
from tierflow.worker.cli_kinds import describe
from tierflow.worker.kinds import registry_from

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kinds"

GOOD = """\
[[kind]]
name = "claims"
text = "{details}"
intents = ["motor", "home", "other"]

[kind.payload]
type = "object"
required = ["details"]
[kind.payload.properties.details]
type = "string"

[[kind.expert]]
name = "assessor"
type = "model"
prompt = "{details}"
[kind.expert.answer]
required = ["decision"]
[kind.expert.answer.properties.decision]
type = "string"

[[kind.expert]]
name = "amounts"
type = "rule"
rule = "amounts"

[[kind.specialist]]
name = "motor"
intents = ["motor"]
experts = ["assessor", "amounts"]
sections = ["motor"]
max_tier = "medium"

[kind.specialist.instructions]
assessor = "Ask for the police report number."

[[kind.specialist.check]]
type = "required"
fields = ["decision"]

[[kind.specialist]]
name = "desk"
general = true
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kinds.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _line(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.split("\n"), 1) if needle in line)


def test_a_kinds_file_declares_specialists_and_the_registry_resolves_their_checks(tmp_path: Path) -> None:
    claims = registry_from([_write(tmp_path, GOOD)]).get("claims")
    motor, desk = claims.specialists
    assert motor.experts == ("assessor", "amounts") and motor.sections == ("motor",)
    assert motor.instructions == {"assessor": "Ask for the police report number."}
    assert motor.max_tier is Tier.MEDIUM and desk.general
    assert motor.checks[0].run is not None, "a specialist's check is resolved like the kind's"
    viewed = claims.as_specialist("motor")
    assert [c.type for c in viewed.checks] == ["required"] and viewed.routing.max_tier is Tier.MEDIUM


Change = Callable[[str], str]


@pytest.mark.parametrize(
    ("change", "needle", "expected"),
    [
        (
            lambda t: t.replace('intents = ["motor"]', 'intents = ["boat"]'),
            'intents = ["boat"]',
            "kind[0].specialist[0].intents: names intent 'boat', not an intent of this kind "
            "(known: motor, home, other)",
        ),
        (
            lambda t: t.replace('experts = ["assessor", "amounts"]', 'experts = ["assessor", "adjuster"]'),
            "experts = [",
            "kind[0].specialist[0].experts: names 'adjuster', not an expert of this kind",
        ),
        (
            lambda t: t.replace('assessor = "Ask', 'amounts = "Ask'),
            'amounts = "Ask',
            "kind[0].specialist[0].instructions.amounts: 'amounts' is not a model expert of this kind",
        ),
        (
            lambda t: t.replace('type = "required"', 'type = "vibes"'),
            'type = "vibes"',
            "kind[0].specialist[0].check[0].type: unknown check 'vibes'",
        ),
        (
            lambda t: t.replace('sections = ["motor"]', 'colour = "red"'),
            'colour = "red"',
            "kind[0].specialist[0].colour: unknown key",
        ),
        (
            lambda t: t.replace('max_tier = "medium"', 'max_tier = "huge"'),
            'max_tier = "huge"',
            "kind[0].specialist[0].max_tier: Input should be",
        ),
        (
            lambda t: t.replace("general = true", 'intents = ["home"]'),
            "[[kind.specialist]]",
            "kind[0].specialist[0]: a kind with specialists needs a general one",
        ),
    ],
)
def test_each_specialist_mistake_is_reported_by_file_line_and_key(
    tmp_path: Path, change: Change, needle: str, expected: str
) -> None:
    text = change(GOOD)
    path = _write(tmp_path, text)
    with pytest.raises(KindsRejected) as caught:
        registry_from([path])
    problems = [str(problem).replace(f"{path}:", "FILE:") for problem in caught.value.problems]
    assert any(p.startswith(f"FILE:{_line(text, needle)}: {expected}") for p in problems), problems


def test_the_example_email_triage_routes_by_team_to_its_specialists() -> None:
    registry = registry_from(sorted(EXAMPLES.glob("*.toml")))
    triage = registry.get("email_triage")
    payload = {"sender": "a@b.example", "subject": "Site down", "body": "Our checkout page is down since 9."}
    outage = decide(triage, analyze_rules(triage, payload, metadata={}), Policy())
    assert (outage.specialist, outage.intent) == ("technical_desk", "technical")
    assert outage.tier is Tier.MEDIUM, "the technical desk starts no lower than medium"
    hello = {"sender": "a@b.example", "subject": "Hello", "body": "Just saying thanks for the help."}
    other = decide(triage, analyze_rules(triage, hello, metadata={}), Policy())
    assert other.specialist == "general_desk" and other.tier is Tier.SMALL
    listed = describe(registry)
    assert "  specialist technical_desk: intents technical; +2 check(s); tiers medium..-" in listed
    assert "  specialist general_support: general" in listed
