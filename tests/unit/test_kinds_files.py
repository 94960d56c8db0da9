"""Kinds files: a valid file loads; each kind of mistake is reported as FILE:LINE: key: reason."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from tierflow.routing.errors import KindsRejected
from tierflow.routing.experts import ExpertOutput
from tierflow.routing.kinds.spec import ExpertSpec, ExpertType, KindSpec
from tierflow.routing.policy import Policy
from tierflow.worker.kinds import ENTRY_POINT_GROUP, KindPlugin, load_plugins, registry_from

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kinds"

GOOD = """\
[[kind]]
name = "claims"
description = "Insurance claims"
text = "{summary}\\n{details}"

[kind.payload]
type = "object"
required = ["summary", "details"]
[kind.payload.properties.summary]
type = "string"
[kind.payload.properties.details]
type = "string"

[[kind.expert]]
name = "assessor"
type = "model"
prompt = "{summary}\\n\\n{details}"
tiers = ["medium", "large"]
[kind.expert.answer]
required = ["decision"]
[kind.expert.answer.properties.decision]
type = "string"
enum = ["pay", "deny", "investigate"]

[[kind.expert]]
name = "amounts"
type = "rule"
rule = "amounts"

[[kind.check]]
type = "one_of"
fields = ["decision"]
values = ["pay", "deny", "investigate"]
"""


def _write(tmp_path: Path, text: str, name: str = "kinds.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(KindsRejected) as caught:
        registry_from([path])
    return [str(problem).replace(f"{path}:", "FILE:") for problem in caught.value.problems]


def test_a_valid_file_declares_its_kind_beside_the_built_ins(tmp_path: Path) -> None:
    registry = registry_from([_write(tmp_path, GOOD)])
    assert registry.names == ("support", "document", "prompt", "claims")
    claims = registry.get("claims")
    assert [e.type for e in claims.experts] == [ExpertType.MODEL, ExpertType.RULE]
    assert claims.experts[1].run is not None, "the registry resolves the rule"
    assert registry.text("claims", {"summary": "Hail", "details": "Roof damaged"}) == "Hail\nRoof damaged"
    assert registry.payload_problems("claims", {"summary": "x"}) == [
        ("<payload>", "'details' is a required property")
    ]


def test_the_example_kinds_files_are_valid() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    registry = registry_from(files)
    assert {"email_triage", "contract_clauses"} <= set(registry.names)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace('name = "claims"', 'name = "claims'), "FILE:2: <file>: not TOML"),
        (
            lambda t: t.replace('type = "object"', 'type = "objekt"', 1),
            "FILE:7: kind[0].payload.type: invalid JSON Schema",
        ),
        (
            lambda t: t.replace('prompt = "{summary}', 'prompt = "{claimant}'),
            "FILE:17: kind[0].expert[0].prompt: names {claimant}, a field the payload schema",
        ),
        (
            lambda t: t.replace('text = "{summary}', 'text = "{policy_no}'),
            "FILE:4: kind[0].text: names {policy_no}",
        ),
        (
            lambda t: t.replace('type = "one_of"', 'type = "vibes"'),
            "FILE:31: kind[0].check[0].type: unknown check 'vibes'",
        ),
        (
            lambda t: t.replace('type = "rule"', 'type = "oracle"'),
            "FILE:27: kind[0].expert[1].type: unknown expert type 'oracle'",
        ),
        (
            lambda t: t.replace('rule = "amounts"', 'rule = "psychic"'),
            "FILE:28: kind[0].expert[1].rule: unknown rule",
        ),
        (
            lambda t: t.replace('name = "claims"', 'name = "support"'),
            "FILE:2: kind[0].name: kind 'support' is a built-in kind",
        ),
        (
            lambda t: t.replace('tiers = ["medium", "large"]', "tiers = []"),
            "FILE:18: kind[0].expert[0].tiers: an expert on no tier",
        ),
        (
            lambda t: t.replace('prompt = "{summary}\\n\\n{details}"', 'prompt = "' + "x" * 33000 + '"'),
            "FILE:17: kind[0].expert[0].prompt: template of 33000 bytes is over the limit of 32768",
        ),
    ],
)
def test_each_mistake_is_reported_by_file_line_and_key(tmp_path: Path, change: object, expected: str) -> None:
    assert callable(change)
    problems = _problems(tmp_path, change(GOOD))
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_kind_declared_twice_across_files_is_refused_and_nothing_loads(tmp_path: Path) -> None:
    first = _write(tmp_path, GOOD, "a.toml")
    second = _write(tmp_path, GOOD, "b.toml")
    with pytest.raises(KindsRejected) as caught:
        registry_from([first, second])
    (problem,) = caught.value.problems
    assert str(problem) == f"{second}:2: kind[0].name: kind 'claims' is already declared at {first}"


def test_a_second_kind_of_a_name_is_a_duplicate_even_when_the_first_does_not_load(tmp_path: Path) -> None:
    broken = GOOD.replace('type = "one_of"', 'type = "vibes"')
    problems = _problems(tmp_path, broken + "\n" + GOOD)
    second = len(broken.split("\n")) + 2  # the name of the second [[kind]]
    assert problems[0].startswith("FILE:") and "unknown check 'vibes'" in problems[0]
    assert f"FILE:{second}: kind[1].name: kind 'claims' is already declared at" in problems[1]


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    broken = GOOD.replace('type = "one_of"', 'type = "vibes"').replace('rule = "amounts"', 'rule = "psychic"')
    assert len(_problems(tmp_path, broken)) == 2


PLUGIN_KIND = KindSpec(
    name="plugged",
    text="{text}",
    experts=(ExpertSpec(name="shout", type=ExpertType.RULE, rule="shout"),),
)


def shout(payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]) -> ExpertOutput:
    return ExpertOutput({"loud": text.upper()}, 1.0)


def plugin() -> KindPlugin:
    """What a package's `tierflow.kinds` entry point gives: a kind and the rule it runs."""
    return KindPlugin(kinds=(PLUGIN_KIND,), rules={"shout": shout})


def test_an_entry_point_plugin_adds_its_kind_and_rule_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    good = EntryPoint("mine", f"{__name__}:plugin", ENTRY_POINT_GROUP)
    registry = registry_from([_write(tmp_path, GOOD)], load_plugins([good]))
    assert registry.names[-2:] == ("plugged", "claims")
    (expert,) = registry.get("plugged").experts
    assert expert.run is not None and expert.run({}, "hi", Policy(), {}).output == {"loud": "HI"}
    broken = EntryPoint("broken", "tierflow_no_such_module:kinds", ENTRY_POINT_GROUP)
    with pytest.raises(KindsRejected, match="entry point broken"):
        load_plugins([broken])
